"""Detection, selective-classification and calibration metrics (pure numpy; sklearn where it has the metric).

Conventions (the same everywhere in the bench and the report):

* every score is oriented **higher = more in-distribution / more reliable**;
* OOD detection treats **ID as the positive class**: AUROC = P(score_ID > score_OOD) + ½ P(=) and AUPR-in is the
  average precision with ID positive; AUPR-out is the average precision with OOD positive and the score negated;
* **FPR@95TPR** = share of OOD inputs accepted at the threshold that accepts 95% of the ID inputs; the threshold is
  the largest τ with mean(score_ID >= τ) >= 0.95 (:func:`training.calibration.calibrate_threshold`, the artifact's own
  acceptance rule). Equivalently: the smallest FPR over the ROC points whose TPR is >= 0.95;
* AUROC, FPR@TPR and the threshold are :mod:`training.calibration`' (one implementation for the export and the bench);
  :func:`bootstrap_interval` gives percentile intervals for any of these two-sample metrics;
* misclassification detection treats **correct predictions as positive**;
* undefined values (a class with no sample) are ``nan``, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_curve

from training.calibration import as1d as _as1d
from training.calibration import auroc, calibrate_threshold, fpr_at_tpr

__all__ = [
    "auroc",
    "fpr_at_tpr",
    "threshold_at_tpr",
    "bootstrap_interval",
    "aupr",
    "ood_metrics",
    "roc_points",
    "misclassification_auroc",
    "ece",
    "risk_coverage",
    "aurc",
    "optimal_aurc",
    "selective_metrics",
]

ECE_BINS = 15


def threshold_at_tpr(scores_pos, tpr: float = 0.95) -> float:
    """Largest τ with mean(scores_pos >= τ) >= tpr; ``nan`` without scores."""
    s = _as1d(scores_pos)
    return float("nan") if s.size == 0 else calibrate_threshold(s, tpr)


def bootstrap_interval(
    scores_pos,
    scores_neg,
    metric: Callable[[np.ndarray, np.ndarray], float] = auroc,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(pos, neg)``: each side resampled with replacement, ``n_boot`` times.

    ``nan`` bounds when a side is empty or ``n_boot`` < 1.
    """
    p, n = _as1d(scores_pos), _as1d(scores_neg)
    if p.size == 0 or n.size == 0 or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        ip = rng.integers(0, p.size, p.size)
        stats.append(metric(p[ip], n[rng.integers(0, n.size, n.size)]))
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def aupr(scores_pos, scores_neg) -> float:
    """Average precision with ``scores_pos`` the positive class."""
    p, n = _as1d(scores_pos), _as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return float("nan")
    y = np.r_[np.ones(p.size), np.zeros(n.size)]
    return float(average_precision_score(y, np.r_[p, n]))


def ood_metrics(scores_id, scores_ood, tpr: float = 0.95) -> dict[str, float]:
    """AUROC, FPR at ``tpr`` ID acceptance, AUPR-in (ID positive), AUPR-out (OOD positive, score negated)."""
    sid, sood = _as1d(scores_id), _as1d(scores_ood)
    return {
        "auroc": auroc(sid, sood),
        "fpr95": fpr_at_tpr(sid, sood, tpr),
        "aupr_in": aupr(sid, sood),
        "aupr_out": aupr(-sood, -sid),
    }


def roc_points(scores_pos, scores_neg, max_points: int = 200) -> dict[str, list[float]]:
    """A thinned ROC curve (FPR, TPR) for plots and results.json."""
    p, n = _as1d(scores_pos), _as1d(scores_neg)
    if p.size == 0 or n.size == 0:
        return {"fpr": [], "tpr": []}
    y = np.r_[np.ones(p.size), np.zeros(n.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[p, n])
    if len(fpr) > max_points:
        idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, max_points).round().astype(int), len(fpr) - 1])
        fpr, tpr = fpr[idx], tpr[idx]
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}


def misclassification_auroc(scores, correct) -> float:
    """AUROC of separating correct (positive) from wrong predictions by ``scores``."""
    s, c = _as1d(scores), np.asarray(correct, dtype=bool).reshape(-1)
    return auroc(s[c], s[~c])


def ece(confidence, correct, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on [0, 1] (right-closed, bin 0 holds 0).

    ECE = Σ_b (n_b / n) |acc_b - conf_b|.
    """
    conf = np.clip(_as1d(confidence), 0.0, 1.0)
    corr = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.size == 0:
        return float("nan")
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(corr[m].mean() - conf[m].mean())
    return float(total / conf.size)


def risk_coverage(scores, correct) -> tuple[np.ndarray, np.ndarray]:
    """Coverage i/n and selective risk (error rate among the i highest-scored) for i = 1..n.

    Ties are order-free: inside a group of equal scores the errors are spread evenly (the expectation over a
    random order), so the curve does not depend on how the sort breaks ties.
    """
    s = _as1d(scores)
    err = 1.0 - np.asarray(correct, dtype=np.float64).reshape(-1)
    n = s.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="stable")
    s_sorted, e_sorted = s[order], err[order]
    cum = np.zeros(n)
    start = 0
    errors_before = 0.0
    while start < n:
        stop = start + 1
        while stop < n and s_sorted[stop] == s_sorted[start]:
            stop += 1
        group = e_sorted[start:stop].sum()
        size = stop - start
        cum[start:stop] = errors_before + group * np.arange(1, size + 1) / size
        errors_before += group
        start = stop
    k = np.arange(1, n + 1)
    return k / n, cum / k


def aurc(scores, correct) -> float:
    """Area under the risk-coverage curve: mean selective risk over the n coverage levels (Geifman et al.)."""
    _, risk = risk_coverage(scores, correct)
    return float(risk.mean()) if risk.size else float("nan")


def optimal_aurc(correct) -> float:
    """AURC of a perfect ranking (all correct predictions first)."""
    c = np.asarray(correct, dtype=bool).reshape(-1)
    return aurc(c.astype(np.float64), c)


def selective_metrics(scores, correct, max_points: int = 100) -> dict:
    """Misclassification AUROC, AURC, E-AURC and a thinned risk-coverage curve for one score."""
    cov, risk = risk_coverage(scores, correct)
    idx = (
        np.unique(np.linspace(0, len(cov) - 1, min(max_points, len(cov))).round().astype(int))
        if len(cov)
        else []
    )
    a = float(risk.mean()) if risk.size else float("nan")
    return {
        "misclassification_auroc": misclassification_auroc(scores, correct),
        "aurc": a,
        "e_aurc": a - optimal_aurc(correct),
        "risk_coverage": {"coverage": [float(cov[i]) for i in idx], "risk": [float(risk[i]) for i in idx]},
    }
