"""The runnable examples in the docstrings of the bench's public entry points (each must run, and run as shown)."""

from __future__ import annotations

import doctest

import pytest

from robustness import api, bench_cli

MODULES = [api, bench_cli]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run_as_shown(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no example"
    assert result.failed == 0
