"""Choosing a reliability score on validation data only: candidate scores and validation-derived shifts.

:func:`validation_shifts` derives distribution shifts from validation images (no external data, never the test
split); :func:`candidate_scores` computes the served score and its alternatives (higher = more reliable) from a
model's logits and latents; :func:`selection_table` gives, per candidate, the validation misclassification AUROC
and the AUROC of validation images vs each shift. ``scripts/ood_eval.py`` prints it as section [1].

:func:`two_threshold_scores` turns a pair of candidates into the score of the rule "accept only if both pass their
thresholds" (the vertex reliability and the softmax margin by default), so that the rule is compared, and chosen,
like any single score.
"""

from __future__ import annotations

import numpy as np
import torch

from robustness.detection_metrics import auroc, misclassification_auroc
from robustness.ood import Features, MaxSoftmaxDetector, log_max_softmax
from training.mahalanobis import TiedGaussian
from training.score import VertexScore

SERVED = "dist_class_centre (served)"
MARGIN = "softmax margin (top-1 - top-2)"  # ranked by log_margin_score: same order, no ties at p1 = 1
TWO_THRESHOLDS = "two thresholds: served and softmax margin"
MARGIN_SHARES = (1.0, 0.5, 0.25)  # the margin's threshold quantile, relative to the served score's
SHIFT_TOLERANCE = (
    0.0  # a pick may lose at most this much AUROC on any validation shift against the served score
)


def validation_shifts(images: np.ndarray, n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 shifts of the first ``n`` images: uniform noise, inverted, rotated 90° (square images), pixel-shuffled."""
    rng = np.random.default_rng(seed)
    x = images[:n]
    hw = x.shape[2] * x.shape[3]
    shifts = {"noise": rng.integers(0, 256, size=x.shape, dtype=np.uint8), "invert": 255 - x}
    if x.shape[2] == x.shape[3]:
        shifts["rot90"] = np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
    shifts["shuffle"] = np.stack(
        [im.reshape(im.shape[0], -1)[:, rng.permutation(hw)].reshape(im.shape) for im in x]
    )
    return shifts


def ideal_vertex_whitening(score: VertexScore, train: Features, labels: np.ndarray) -> TiedGaussian:
    """Tied covariance of ``u`` around the ideal ±1 vertex of each class, on correctly classified training rows."""
    ok = train.logits.argmax(1) == labels
    u = score.scaled(torch.from_numpy(train.z[ok])).numpy()
    return TiedGaussian.fit(u, labels[ok], len(score.codes), centres=score.codes.numpy())


def log_margin_score(logits: np.ndarray, log_max: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``-log(1 - (p1 - p2))`` of the top-two softmax probabilities: monotone in the margin ``p1 - p2``, so the same
    AUROC and thresholds, but exact where ``p1`` rounds to 1 and the margin itself would tie at 1.

    ``1 - (p1 - p2) = (1 - p1) + p2``, both terms in log space: :func:`robustness.ood.log_max_softmax` gives
    ``log p1`` and ``log(1 - p1)`` (pass them as ``log_max`` where already computed), and
    ``log p2 = log p1 - (l1 - l2)``.
    """
    lo = np.asarray(logits, dtype=np.float64)
    log_p1, log_rest = log_max_softmax(lo) if log_max is None else log_max
    top2 = np.sort(lo, axis=1)[:, -2:]
    return -np.logaddexp(log_rest, log_p1 - (top2[:, 1] - top2[:, 0]))


def candidate_scores(
    f: Features, score: VertexScore | None, ideal_vertex: TiedGaussian | None = None
) -> dict[str, np.ndarray]:
    """Candidate reliability scores (higher = more reliable, float64) of features ``f``."""
    log_max = log_max_softmax(f.logits)
    c = {"max_softmax": MaxSoftmaxDetector.from_log(*log_max), MARGIN: log_margin_score(f.logits, log_max)}
    if score is None:
        return c
    logits, z = torch.from_numpy(f.logits), torch.from_numpy(f.z)
    with torch.no_grad():
        out = {k: v.numpy().astype(np.float64) for k, v in score(logits, z)._asdict().items()}
        u = score.scaled(z).numpy().astype(np.float64)
    pred = f.logits.argmax(1)
    d = u.shape[1]
    step = np.abs(u - score.codes.numpy()[pred])
    centres = TiedGaussian(score.centres.numpy().astype(np.float64), score.whiten.numpy().astype(np.float64))
    c.update(
        {
            SERVED: -out["dist_class_centre"],
            "dist_class_centre, min over classes": -np.sqrt(centres.sq_dist(u).min(axis=1) / d),
            "dist_predicted_vertex RMS": -out["dist_predicted_vertex"],
            "dist_predicted_vertex L1": -step.mean(axis=1),
            "dist_predicted_vertex Linf": -step.max(axis=1),
            "dist_nearest_vertex RMS": -out["dist_nearest_vertex"],
            "dist_nearest_vertex + 10 [nearest != argmax]": -(
                out["dist_nearest_vertex"] + 10.0 * (out["nearest_vertex_class"] != pred)
            ),
            "dist_class_centre - log max_softmax": -out["dist_class_centre"] + log_max[0],
        }
    )
    if ideal_vertex is not None:
        c["whitened distance to the ideal vertex"] = -np.sqrt(
            ideal_vertex.sq_dist(u)[np.arange(len(u)), pred] / d
        )
    return c


def ecdf(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of ``reference`` at or below each ``x`` (the empirical CDF of the reference, e.g. validation scores)."""
    return np.searchsorted(np.sort(np.asarray(reference, dtype=np.float64)), x, side="right") / len(reference)


def two_threshold_scores(
    cands: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    a: str = SERVED,
    b: str = MARGIN,
    share: float = 1.0,
) -> np.ndarray:
    """Score of the rule "accept iff ``a >= t_a`` and ``b >= t_b``", ``t_a`` at the ``q``-quantile of ``reference``
    (in-distribution validation scores) and ``t_b`` at its ``share·q``-quantile: ``min(F_a(a), F_b(b) / share)``,
    ``F`` the reference ECDFs.

    Thresholding it at ``q`` accepts exactly the rows that pass both thresholds, so its AUROC ranks the whole family
    of such rules; ``share < 1`` makes ``b`` the lighter filter.
    """
    return np.minimum(ecdf(reference[a], cands[a]), ecdf(reference[b], cands[b]) / share)


def two_threshold_name(share: float) -> str:
    return TWO_THRESHOLDS if share == 1.0 else f"{TWO_THRESHOLDS}, margin quantile x{share:g}"


def with_two_thresholds(
    cands: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``cands`` plus the two-threshold rules of :data:`MARGIN_SHARES` when the served vertex score is among them."""
    if SERVED not in cands:
        return cands
    return {
        **cands,
        **{two_threshold_name(s): two_threshold_scores(cands, reference, share=s) for s in MARGIN_SHARES},
    }


def pick(table: dict[str, dict[str, float]], tolerance: float = SHIFT_TOLERANCE) -> str:
    """The validation choice: the highest ``val_misclf`` among the candidates that detect errors better than the
    served score and lose at most ``tolerance`` of its AUROC on *every* validation shift (the served score itself
    when none does).

    The served score's first job is to reject what the model does not know (where it is weakest against the
    issue's baseline); a rule may add misclassification detection but trade none of that job away.
    """
    served = table[SERVED]
    shifts = [k for k in served if k.startswith("val_vs_")]
    ok = [
        name
        for name, row in table.items()
        if name == SERVED
        or (row["val_misclf"] > served["val_misclf"] and all(row[k] >= served[k] - tolerance for k in shifts))
    ]
    return max(ok, key=lambda name: table[name]["val_misclf"])


def selection_table(
    val: Features,
    val_labels: np.ndarray,
    shifts: dict[str, Features],
    score: VertexScore | None,
    ideal_vertex: TiedGaussian | None = None,
    reference: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Per candidate: ``val_misclf`` (correct vs wrong) and ``val_vs_<shift>`` AUROCs, validation data only.

    ``reference`` is ``candidate_scores(val, score, ideal_vertex)`` where the caller already has it.
    """
    ref = candidate_scores(val, score, ideal_vertex) if reference is None else reference
    val_c = with_two_thresholds(ref, ref)
    shift_c = {
        k: with_two_thresholds(candidate_scores(f, score, ideal_vertex), ref) for k, f in shifts.items()
    }
    correct = val.logits.argmax(1) == val_labels
    return {
        name: {
            "val_misclf": misclassification_auroc(s, correct),
            **{f"val_vs_{k}": auroc(s, shift_c[k][name]) for k in shifts},
        }
        for name, s in val_c.items()
    }
