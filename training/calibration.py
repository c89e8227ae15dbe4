"""Calibration of the reliability threshold and the ranking metrics of a score (higher = more reliable / more
in-distribution), shared by the export and by :mod:`robustness.detection_metrics`.

* :func:`calibrate_threshold` sets the artifact's threshold: the largest τ with ``mean(scores >= τ) >= rate``;
* :func:`auroc` = P(score_pos > score_neg) + ½ P(=) (sklearn's ROC AUC with ``pos`` the positive class);
* :func:`fpr_at_tpr` = share of negatives accepted at the threshold that accepts ``tpr`` of the positives;
* :func:`accept_summary` = accept rate and accuracy of the accepted / rejected answers (the accept rule itself is
  :func:`serving.artifact.accepts`); :func:`calibration_summary` = what the artifact's metadata records of it.

Undefined values (an empty side) are ``nan`` for the two metrics; calibrating on zero samples is an error.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from serving.artifact import accepts
from training.jsonio import clean_json


def as1d(x) -> np.ndarray:
    """``x`` as a flat float64 array (the shape every metric here and in :mod:`robustness.detection_metrics` works on)."""
    return np.asarray(x, dtype=np.float64).reshape(-1)


def calibrate_threshold(scores, target_accept_rate=0.95):
    """Largest threshold such that ``mean(scores >= threshold) >= target_accept_rate`` on these scores.

    That is the order statistic s_(k) with k = floor((1 - target) * n) (0-based, ascending), so the accepted share
    is at least the target and exceeds it only by ties / rounding (at most 1/n without ties). An array of targets
    gives the array of thresholds (one sort).

    >>> calibrate_threshold([0.1, 0.4, 0.2, 0.9, 0.7], target_accept_rate=0.6)  # accepts 0.4, 0.7 and 0.9
    0.4
    """
    s = np.sort(as1d(scores))
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
    p, n = as1d(scores_pos), as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(p.size), np.zeros(n.size)], np.r_[p, n]))


def fpr_at_tpr(scores_pos, scores_neg, tpr: float = 0.95) -> float:
    """Share of negatives with score >= the threshold that accepts ``tpr`` of the positives; ``nan`` if a side is
    empty."""
    p, n = as1d(scores_pos), as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return float("nan")
    return float(np.mean(n >= calibrate_threshold(p, tpr)))


def accept_summary(correct: np.ndarray, accepted: np.ndarray) -> dict:
    """``accept_rate``, ``acc_accepted`` and ``acc_rejected`` (``None`` when that side is empty) of boolean per-sample
    ``correct`` and ``accepted``.

    >>> accept_summary(np.array([True, True, False, True]), accepts(np.array([0.9, 0.8, 0.1, 0.3]), 0.5))
    {'accept_rate': 0.5, 'acc_accepted': 1.0, 'acc_rejected': 0.5}
    """
    return {
        "accept_rate": float(accepted.mean()),
        "acc_accepted": float(correct[accepted].mean()) if accepted.any() else None,
        "acc_rejected": float(correct[~accepted].mean()) if (~accepted).any() else None,
    }


def calibration_summary(
    outputs: dict[str, np.ndarray], labels: np.ndarray, threshold: float, split: str = "val"
) -> dict:
    """What the artifact's metadata records of its threshold on one split of the graph's ``outputs``."""
    rel = outputs["reliability"]
    pred = outputs["logits"].argmax(1)
    correct = pred == labels
    accepted = accepts(rel, threshold)
    nearest = outputs["nearest_vertex_class"]
    return clean_json(
        {
            "split": split,
            "n": int(len(labels)),
            "acc": float(correct.mean()),
            **accept_summary(correct, accepted),
            "misclassification_auroc": auroc(rel[correct], rel[~correct])
            if correct.any() and (~correct).any()
            else None,
            "unoccupied_vertex_rate": float((nearest == -1).mean()),
            "nearest_disagrees_rate": float(((nearest != pred) & (nearest != -1)).mean()),
        }
    )
