"""Adversarial robustness and OOD rejection bench (``python -m robustness.bench``).

``from robustness import evaluate_reject_option``: the rejection-aware attack on your own model and score
(:mod:`robustness.api`); imported on first use, so ``import robustness.x`` stays light.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "evaluate_reject_option":
        from robustness.api import evaluate_reject_option

        return evaluate_reject_option
    raise AttributeError(f"module 'robustness' has no attribute {name!r}")
