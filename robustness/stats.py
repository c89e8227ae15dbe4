"""Intervals and paired tests for the bench's figures (scipy.stats).

* :func:`proportion` — a share ``k / n`` with its 95% Wilson score interval (``scipy.stats.binomtest``);
* :func:`mcnemar` — exact McNemar test of two models on the same points: a two-sided binomial test on the
  discordant pairs (points robust for one model and not the other).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

CONFIDENCE = 0.95


def proportion(k: int, n: int, confidence: float = CONFIDENCE) -> dict:
    """``{"value", "k", "n", "ci95": [lo, hi]}``; value and interval are ``None`` when ``n == 0``."""
    k, n = int(k), int(n)
    if n == 0:
        return {"value": None, "k": 0, "n": 0, "ci95": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return {"value": k / n, "k": k, "n": n, "ci95": [float(ci.low), float(ci.high)]}


def proportion_of(mask: np.ndarray) -> dict:
    """:func:`proportion` of the True entries of a boolean vector."""
    m = np.asarray(mask, dtype=bool).reshape(-1)
    return proportion(int(m.sum()), m.size)


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact McNemar test of paired outcomes ``a`` and ``b`` (bool per point, e.g. "robust").

    Returns the counts ``a_only`` / ``b_only`` of discordant points, the difference of the two shares and the
    two-sided p-value (1.0 when there is no discordant point).
    """
    a, b = np.asarray(a, dtype=bool).reshape(-1), np.asarray(b, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same points, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n_disc = a_only + b_only
    p = 1.0 if n_disc == 0 else float(binomtest(a_only, n_disc, 0.5).pvalue)
    return {
        "n": int(a.size),
        "a_only": a_only,
        "b_only": b_only,
        "diff": float(a.mean() - b.mean()) if a.size else None,
        "p_value": p,
    }
