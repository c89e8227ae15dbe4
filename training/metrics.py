"""Ranking metrics of a score (higher = more reliable / more in-distribution), shared by the export's calibration
and by :mod:`robustness.detection_metrics`.

* :func:`calibrate_threshold` is the artifact's acceptance rule: the largest τ with ``mean(scores >= τ) >= rate``;
* :func:`auroc` = P(score_pos > score_neg) + ½ P(=) (sklearn's ROC AUC with ``pos`` the positive class);
* :func:`fpr_at_tpr` = share of negatives accepted at the threshold that accepts ``tpr`` of the positives.

Undefined values (an empty side) are ``nan`` for the two metrics; calibrating on zero samples is an error.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def _as1d(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def calibrate_threshold(scores, target_accept_rate=0.95):
    """Largest threshold such that ``mean(scores >= threshold) >= target_accept_rate`` on these scores.

    That is the order statistic s_(k) with k = floor((1 - target) * n) (0-based, ascending), so the accepted share
    is at least the target and exceeds it only by ties / rounding (at most 1/n without ties). An array of targets
    gives the array of thresholds (one sort).
    """
    s = np.sort(_as1d(scores))
    rate = np.asarray(target_accept_rate, dtype=np.float64)
    if not np.all((rate > 0.0) & (rate <= 1.0)):
        raise ValueError(f"target_accept_rate must be in (0, 1], got {target_accept_rate}")
    if s.size == 0:
        raise ValueError("cannot calibrate a threshold on zero samples")
    k = np.floor((1.0 - rate) * s.size + 1e-9).astype(np.int64)
    out = s[np.minimum(k, s.size - 1)]
    return float(out) if out.ndim == 0 else out


def auroc(scores_pos, scores_neg) -> float:
    """ROC AUC with ``scores_pos`` the positive (higher-scored) class; ``nan`` if either side is empty."""
    p, n = _as1d(scores_pos), _as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(p.size), np.zeros(n.size)], np.r_[p, n]))


def fpr_at_tpr(scores_pos, scores_neg, tpr: float = 0.95) -> float:
    """Share of negatives with score >= the threshold that accepts ``tpr`` of the positives; ``nan`` if a side is
    empty."""
    p, n = _as1d(scores_pos), _as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return float("nan")
    return float(np.mean(n >= calibrate_threshold(p, tpr)))
