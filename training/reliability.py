"""Reliability score from the hypercube geometry of a binary-encoding latent ("fit once, score many").

:class:`VertexGeometry` is fitted once on the training latents of correctly classified samples:

* per latent dimension j two peaks ``low_j < high_j`` (a two-Gaussian mixture, :func:`training.geometry.fit_peaks`;
  the peaks are not ``±a``: a dimension that splits the classes unevenly has asymmetric peaks), the threshold
  ``t_j = (low_j + high_j) / 2`` and the half-edge ``a_j = (high_j - low_j) / 2``;
* scaled coordinates ``u = (z - t) / a``: every vertex of the fitted hypercube sits at ``u ∈ {-1, +1}^d``,
  so no raw z unit appears anywhere downstream (distances and thresholds are scale-free);
* the codebook: the vertex (sign pattern of u) of each class's mean; distinct codes are required;
* each class's centre ``c_k`` (its mean u: where the training data put its vertex) and the tied within-class
  covariance ``Σ`` of ``u - c_y``, stored as a whitening matrix ``W`` with ``W Wᵀ = Σ⁻¹``.

:meth:`VertexGeometry.score` is the pure-numpy float32 reference implementation of what the exported ONNX graph
computes (``training.export``), see :data:`serving.artifact.OUTPUT_NAMES`:

* ``dist_nearest_vertex`` = RMS over dimensions of ``|u - sign(u)|`` (distance to the nearest vertex),
* ``dist_predicted_vertex`` = RMS of ``|u - v_pred|`` with ``v_pred`` the ±1 code of ``argmax(logits)``,
* ``nearest_vertex_class`` = the class whose code is ``sign(u)``, else -1 (unoccupied vertex),
* ``dist_class_centre`` = ``sqrt((u - c_pred)ᵀ Σ⁻¹ (u - c_pred) / d)``: distance to the predicted class's vertex in units
  of the within-class spread (a Mahalanobis distance; scale-free),
* ``reliability`` = ``exp(-dist_class_centre)`` (the choice is justified by measurement in docs/reliability.md):
  1 exactly on the predicted class's vertex (its centre), strictly decreasing in the distance, in (0, 1].

A geometry built without centres / whitening (``VertexGeometry(low, high, codes)``) uses ``c_k`` = the ideal ±1
vertex and ``Σ = I``, so ``dist_class_centre = dist_predicted_vertex``.

For the baselines (no_pen / lin_pen / nonlin_pen), :class:`MaxSoftmax` exposes the same outputs with the maximum
softmax probability as the reliability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.geometry import fit_peaks

VERTEX_SCORE = "vertex_distance"
SOFTMAX_SCORE = "max_softmax"
MIN_HALF_EDGE = 1e-6  # relative to the largest half-edge: guards against a collapsed (unimodal) dimension


class GeometryError(ValueError):
    """The latent does not form a usable binary encoding (duplicate codes, empty class...)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def code_string(code: np.ndarray) -> str:
    """±1 code -> "0101..." (1 = the high side of the threshold)."""
    return "".join("1" if c > 0 else "0" for c in np.asarray(code).reshape(-1))


def parse_code(text: str) -> np.ndarray:
    if not text or set(text) - {"0", "1"}:
        raise ValueError(f"expected a code string of 0/1 characters, got {text!r}")
    return np.array([1.0 if c == "1" else -1.0 for c in text], dtype=np.float32)


@dataclass
class VertexGeometry:
    """Fitted hypercube: per-dimension peaks and the class codebook (codes as ±1, shape (K, d))."""

    low: np.ndarray
    high: np.ndarray
    codes: np.ndarray
    classes: list[str] = field(default_factory=list)
    separation: np.ndarray | None = None  # peak distance / pooled peak std, per dimension (diagnostic)
    centres: np.ndarray | None = None  # (K, d) class centres in u (default: the ±1 codes)
    whiten: np.ndarray | None = None  # (d, d) W with W Wᵀ = Σ⁻¹ of the within-class residual (default: identity)

    name = VERTEX_SCORE

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        self.codes = np.asarray(self.codes, dtype=np.float32)
        if not self.classes:
            self.classes = [str(k) for k in range(len(self.codes))]
        if self.codes.ndim != 2 or self.codes.shape[1] != self.latent_dim:
            raise GeometryError(f"expected codes of shape (K, {self.latent_dim}), got {self.codes.shape}")
        if len(self.classes) != len(self.codes):
            raise GeometryError(f"expected {len(self.codes)} class names, got {len(self.classes)}")
        if np.any(self.high < self.low):
            raise GeometryError("expected low <= high in every dimension")
        k, d = self.codes.shape
        self.centres = (self.codes if self.centres is None else np.asarray(self.centres)).astype(np.float32)
        self.whiten = (np.eye(d) if self.whiten is None else np.asarray(self.whiten)).astype(np.float32)
        if self.centres.shape != (k, d) or self.whiten.shape != (d, d):
            raise GeometryError(f"expected centres ({k}, {d}) and whiten ({d}, {d}), got {self.centres.shape} and "
                                f"{self.whiten.shape}")

    # ------------------------------------------------------------------ derived parameters
    @property
    def latent_dim(self) -> int:
        return len(self.low)

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    @property
    def threshold(self) -> np.ndarray:
        return 0.5 * (self.low + self.high)

    @property
    def half_edge(self) -> np.ndarray:
        a = 0.5 * (self.high - self.low)
        return np.maximum(a, MIN_HALF_EDGE * max(float(a.max(initial=0.0)), 1e-12))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls, z_train: np.ndarray, pred: np.ndarray, labels: np.ndarray, classes: list[str] | None = None,
        num_classes: int | None = None, max_samples: int = 5000,
    ) -> VertexGeometry:
        """Fit peaks and codebook on the training latents of correctly classified samples (``pred == labels``)."""
        z = np.asarray(z_train, dtype=np.float64)
        pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
        if z.ndim != 2 or len(z) != len(pred) or len(pred) != len(labels):
            raise GeometryError(f"expected z (N, d), pred (N,), labels (N,); got {z.shape}, {pred.shape}, {labels.shape}")
        k = num_classes or (len(classes) if classes else int(max(labels.max(), pred.max())) + 1)
        names = list(classes) if classes else [str(i) for i in range(k)]
        ok = pred == labels
        zc, yc = z[ok], labels[ok]
        empty = [names[c] for c in range(k) if not np.any(yc == c)]
        if empty:
            raise GeometryError(
                f"classes {empty} have no correctly classified training sample, so they have no vertex; "
                "the model is not usable for the vertex score (train longer or check the data)"
            )
        peaks = [fit_peaks(zc[:, j], max_samples=max_samples, seed=j) for j in range(z.shape[1])]
        low = np.array([p.low for p in peaks])
        high = np.array([p.high for p in peaks])
        sep = np.array([p.separation for p in peaks])
        geo = cls(low, high, np.ones((k, z.shape[1]), np.float32), names, sep)
        means = np.stack([zc[yc == c].mean(axis=0) for c in range(k)])
        u_means = (means - geo.threshold) / geo.half_edge
        geo.codes = np.where(u_means > 0, 1.0, -1.0).astype(np.float32)
        geo.check_distinct()
        geo.centres, geo.whiten = whitening((zc - geo.threshold) / geo.half_edge, yc, k)
        return geo

    def check_distinct(self) -> None:
        seen: dict[str, list[str]] = {}
        for name, code in zip(self.classes, self.codes, strict=True):
            seen.setdefault(code_string(code), []).append(name)
        clashes = {c: n for c, n in seen.items() if len(n) > 1}
        if clashes:
            desc = "; ".join(f"classes {', '.join(map(repr, n))} share vertex {c}" for c, n in clashes.items())
            raise GeometryError(
                f"duplicate class codes: {desc}. Expected {self.num_classes} distinct vertices: the latent is not a "
                "binary encoding with one vertex per class (train longer / with a larger gamma cap, or use a larger "
                "latent_dim)"
            )

    # ------------------------------------------------------------------ scoring (reference implementation)
    def scaled(self, z: np.ndarray) -> np.ndarray:
        """u = (z - t) / a in float32."""
        t = self.threshold.astype(np.float32)
        a = self.half_edge.astype(np.float32)
        return (np.asarray(z, dtype=np.float32) - t) / a

    def score(self, z: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs (besides logits and z) for latents ``z`` and ``logits``; float32 / int64."""
        z = np.asarray(z, dtype=np.float32)
        logits = np.asarray(logits, dtype=np.float32)
        u = self.scaled(z)
        s = np.where(u > 0, np.float32(1), np.float32(-1))
        pred = logits.argmax(axis=1)
        v_pred = self.codes[pred]
        dist_nearest_vertex = np.sqrt(np.mean((u - s) ** 2, axis=1, dtype=np.float32)).astype(np.float32)
        dist_predicted_vertex = np.sqrt(np.mean((u - v_pred) ** 2, axis=1, dtype=np.float32)).astype(np.float32)
        w = (u - self.centres[pred]) @ self.whiten
        dist_class_centre = np.sqrt(np.mean(w**2, axis=1, dtype=np.float32)).astype(np.float32)
        dots = s @ self.codes.T
        nearest = np.where(dots.max(axis=1) == self.latent_dim, dots.argmax(axis=1), -1).astype(np.int64)
        return {
            "probs": softmax(logits),
            "nearest_vertex_class": nearest,
            "dist_nearest_vertex": dist_nearest_vertex,
            "dist_predicted_vertex": dist_predicted_vertex,
            "dist_class_centre": dist_class_centre,
            "reliability": np.exp(-dist_class_centre).astype(np.float32),
        }

    # ------------------------------------------------------------------ (de)serialisation
    def to_metadata(self) -> tuple[dict, dict[str, str]]:
        """``(geometry, codebook)`` JSON fields of the artifact metadata."""
        geometry = {
            "low": self.low.tolist(), "high": self.high.tolist(), "midpoint": self.threshold.tolist(),
            "half_edge": self.half_edge.tolist(),
            "separation": None if self.separation is None else [float(s) for s in self.separation],
            "centres": self.centres.tolist(),
            "whiten": self.whiten.tolist(),
            "coordinates": "u = (z - midpoint) / half_edge; vertices at u in {-1, +1}^d",
        }
        return geometry, {name: code_string(c) for name, c in zip(self.classes, self.codes, strict=True)}

    @classmethod
    def from_metadata(cls, metadata: dict) -> VertexGeometry:
        """Rebuild from an artifact's metadata (``geometry`` + ``codebook`` in class order)."""
        geo, book = metadata["geometry"], metadata["codebook"]
        classes = list(metadata["classes"])
        sep = geo.get("separation")
        return cls(np.array(geo["low"]), np.array(geo["high"]), np.stack([parse_code(book[c]) for c in classes]),
                   classes, None if sep is None else np.array(sep), np.array(geo["centres"]), np.array(geo["whiten"]))


class MaxSoftmax:
    """Baseline score with the same outputs: reliability = max softmax probability, nearest = argmax."""

    name = SOFTMAX_SCORE

    def score(self, z: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        probs = softmax(logits)
        maxp = probs.max(axis=1).astype(np.float32)
        return {
            "probs": probs,
            "nearest_vertex_class": probs.argmax(axis=1).astype(np.int64),
            "dist_nearest_vertex": (1 - maxp).astype(np.float32),
            "dist_predicted_vertex": (1 - maxp).astype(np.float32),
            "dist_class_centre": (1 - maxp).astype(np.float32),
            "reliability": maxp,
        }


def whitening(u: np.ndarray, labels: np.ndarray, num_classes: int, ridge: float = 1e-6,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Class centres (mean u per class) and ``W`` with ``W Wᵀ = Σ⁻¹``, Σ the tied covariance of ``u - centre``.

    A small ridge (``ridge`` × mean variance) keeps Σ invertible when a dimension has collapsed."""
    u = np.asarray(u, dtype=np.float64)
    centres = np.stack([u[labels == c].mean(axis=0) for c in range(num_classes)])
    r = u - centres[labels]
    cov = r.T @ r / max(len(r) - num_classes, 1)
    cov += ridge * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    whiten = np.linalg.cholesky(np.linalg.inv(cov))
    return centres.astype(np.float32), whiten.astype(np.float32)


def calibrate_threshold(reliability: np.ndarray, target_accept_rate: float = 0.95) -> float:
    """Largest threshold such that ``mean(reliability >= threshold) >= target_accept_rate`` on these scores.

    That is the order statistic r_(k) with k = floor((1 - target) * n) (0-based, ascending), so the accepted
    share is at least the target and exceeds it only by ties / rounding (at most 1/n).
    """
    r = np.sort(np.asarray(reliability, dtype=np.float64).reshape(-1))
    if not 0.0 < target_accept_rate <= 1.0:
        raise ValueError(f"target_accept_rate must be in (0, 1], got {target_accept_rate}")
    if r.size == 0:
        raise ValueError("cannot calibrate a threshold on zero samples")
    k = int(np.floor((1.0 - target_accept_rate) * r.size + 1e-9))
    return float(r[min(k, r.size - 1)])


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(=) (Mann-Whitney), i.e. ROC AUC with 'pos' the higher-scored class."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(scores_pos)), np.zeros(len(scores_neg))]
    return float(roc_auc_score(y, np.r_[scores_pos, scores_neg]))


def fpr_at_tpr(scores_id: np.ndarray, scores_ood: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted when the threshold accepts ``tpr`` of the ID inputs."""
    th = calibrate_threshold(scores_id, tpr)
    return float(np.mean(np.asarray(scores_ood) >= th))
