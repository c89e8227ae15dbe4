"""Wilson intervals and the exact McNemar test against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from robustness.stats import mcnemar, proportion


def test_wilson_interval_known_values():
    p = proportion(5, 100)
    assert p["value"] == 0.05
    assert p["ci95"] == pytest.approx([0.02154, 0.11175], abs=1e-4)  # Wilson, z = 1.96
    zero = proportion(0, 100)
    assert zero["ci95"][0] == 0.0 and zero["ci95"][1] == pytest.approx(0.03699, abs=1e-4)
    assert proportion(0, 0)["value"] is None


def test_mcnemar_exact_on_discordant_pairs():
    a = np.array([True] * 10 + [False] * 90)
    b = np.zeros(100, bool)
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    assert mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same points"):
        mcnemar(a, b[:5])
