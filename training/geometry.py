"""Latent geometry: bimodality per dimension, same-encoding fraction, distinct class codes, neural-collapse stats.

Pure functions on numpy arrays (latents ``z`` of shape (N, d), labels / predictions of shape (N,)), so they can be
tested on synthetic latents with known answers. This module measures a latent (``metrics.json``,
:mod:`training.run_metrics`); the fitted hypercube the served score uses, :class:`training.reliability.VertexGeometry`,
is built from the same :func:`fit_peaks` but lives with the score it serves in :mod:`training.reliability`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

BIMODAL_SEPARATION = (
    4.0  # peak distance in units of the peaks' pooled std above which a dimension counts as bimodal
)
BIMODAL_MIN_WEIGHT = 0.02  # the smaller peak must hold at least this share of the samples


@dataclass(frozen=True)
class DimensionPeaks:
    """Two-component 1-D Gaussian mixture of one latent dimension; ``low`` < ``high``."""

    low: float
    high: float
    std_low: float
    std_high: float
    weight_low: float

    @property
    def midpoint(self) -> float:
        """Halfway between the peaks: the dimension's bit is 1 above it."""
        return 0.5 * (self.low + self.high)

    @property
    def separation(self) -> float:
        pooled = np.sqrt(0.5 * (self.std_low**2 + self.std_high**2))
        return float((self.high - self.low) / max(pooled, 1e-12))

    @property
    def bimodal(self) -> bool:
        return (
            self.separation >= BIMODAL_SEPARATION
            and min(self.weight_low, 1 - self.weight_low) >= BIMODAL_MIN_WEIGHT
        )


def fit_peaks(values: np.ndarray, max_samples: int = 5000, seed: int = 0) -> DimensionPeaks:
    """Fit two Gaussian peaks to one latent dimension (subsampled for speed)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < 2 or np.ptp(v) == 0:
        c = float(v.mean()) if v.size else 0.0
        return DimensionPeaks(c, c, 0.0, 0.0, 1.0)
    if v.size > max_samples:
        v = np.random.default_rng(seed).choice(v, max_samples, replace=False)
    gm = GaussianMixture(2, covariance_type="full", random_state=seed, reg_covar=1e-12 + 1e-9 * v.var())
    gm.fit(v[:, None])
    means = gm.means_.reshape(-1)
    stds = np.sqrt(gm.covariances_.reshape(-1))
    lo, hi = np.argsort(means)
    return DimensionPeaks(
        float(means[lo]), float(means[hi]), float(stds[lo]), float(stds[hi]), float(gm.weights_[lo])
    )


def sign_codes(z: np.ndarray, midpoints: np.ndarray | None = None) -> np.ndarray:
    """Binary code (N, d) of each latent: 1 where z_j > m_j (m = 0 if no midpoints are given)."""
    m = np.zeros(z.shape[1]) if midpoints is None else np.asarray(midpoints)
    return (z > m).astype(np.int8)


def class_codes(codes: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[int, tuple[int, ...]]:
    """The most frequent code of each predicted class (classes never predicted are absent)."""
    out = {}
    for k in range(num_classes):
        rows = codes[pred == k]
        if len(rows):
            out[k] = Counter(map(tuple, rows.tolist())).most_common(1)[0][0]
    return out


def agrees_with_class_code(codes: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Per sample: does its code equal the most frequent code of its predicted class (averaged over any subset, e.g.
    accepted inputs, it is that subset's same-encoding)."""
    agree = np.zeros(len(codes), dtype=bool)
    for k, c in class_codes(codes, pred, num_classes).items():
        agree[pred == k] = (codes[pred == k] == np.array(c)).all(axis=1)
    return agree


def same_encoding_fraction(codes: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Share of samples whose code equals the most frequent code of their predicted class."""
    if len(pred) == 0:
        return float("nan")
    return float(agrees_with_class_code(codes, pred, num_classes).mean())


def collapse_stats(z: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """NC1 = Tr(Σ_W Σ_B⁺)/K, Tr(Σ_W)/Tr(Σ_B) and equinorm (coefficient of variation of centred class-mean norms).

    Classes with no sample are skipped; with fewer than two populated classes the statistics are NaN.
    """
    present = [k for k in range(num_classes) if np.any(labels == k)]
    if len(present) < 2:
        return {"nc1": float("nan"), "sigma_w_rel": float("nan"), "equinorm_cv": float("nan")}
    z = np.asarray(z, dtype=np.float64)
    mu_g = z.mean(axis=0)
    means = np.stack([z[labels == k].mean(axis=0) for k in present])
    d = z.shape[1]
    sw = np.zeros((d, d))
    for mk, k in zip(means, present, strict=True):
        diff = z[labels == k] - mk
        sw += diff.T @ diff
    sw /= len(z)
    centred = means - mu_g
    sb = centred.T @ centred / len(present)
    nc1 = float(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / len(present))
    norms = np.linalg.norm(centred, axis=1)
    return {
        "nc1": nc1,
        "sigma_w_rel": float(np.trace(sw) / max(np.trace(sb), 1e-300)),
        "equinorm_cv": float(norms.std() / max(norms.mean(), 1e-300)),
    }


def latent_geometry(
    z: np.ndarray, pred: np.ndarray, labels: np.ndarray, num_classes: int, peaks: list[DimensionPeaks]
) -> dict:
    """Geometry of one split's latents, using peaks (and so midpoints) fitted on the training split."""
    codes = sign_codes(z, np.array([p.midpoint for p in peaks]))
    raw = sign_codes(z)
    modal = class_codes(codes, pred, num_classes)
    correct = pred == labels
    agree = agrees_with_class_code(codes, pred, num_classes)
    return {
        "n": int(len(z)),
        "same_encoding": float(agree.mean()) if len(z) else float("nan"),
        "same_encoding_correct": float(agree[correct].mean()) if correct.any() else float("nan"),
        "same_encoding_errors": float(agree[~correct].mean()) if (~correct).any() else float("nan"),
        "same_encoding_raw_sign": same_encoding_fraction(raw, pred, num_classes),
        "distinct_class_codes": len(set(modal.values())),
        "classes_predicted": len(modal),
        "class_codes": {str(k): "".join(map(str, c)) for k, c in modal.items()},
        **collapse_stats(z, labels, num_classes),
    }
