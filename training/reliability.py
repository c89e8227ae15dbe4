"""The fitted hypercube of a binary-encoding latent ("fit once, score many") and the numpy oracle of the score.

:class:`VertexGeometry` is fitted once on the training latents of correctly classified samples:

* per latent dimension j two peaks ``low_j < high_j`` (a two-Gaussian mixture, :func:`training.geometry.fit_peaks`;
  a dimension that splits the classes unevenly has asymmetric peaks), the ``midpoint_j = (low_j + high_j) / 2`` and
  the ``half_edge_j = (high_j - low_j) / 2``, so that the scaled coordinates ``u = (z - midpoint) / half_edge`` put
  every vertex at ``u in {-1, +1}^d`` (nothing downstream is in raw z units);
* the codebook: the vertex (sign pattern of u) of each class's mean; distinct codes are required;
* each class's centre (its mean u) and the whitening of the tied within-class covariance of u
  (:class:`training.mahalanobis.TiedGaussian`).

The score itself is defined, and computed in torch, by :class:`training.score.VertexScore` (max-softmax for the
other variants: :class:`training.score.SoftmaxScore`). :meth:`VertexGeometry.score` and :meth:`MaxSoftmax.score` are
independent float32 numpy implementations of the same outputs, kept as the oracle the tests compare the torch
module and the ONNX graph against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax as _softmax

from training.geometry import fit_peaks
from training.mahalanobis import TiedGaussian

VERTEX_SCORE = "vertex_distance"
SOFTMAX_SCORE = "max_softmax"
MIN_HALF_EDGE = 1e-6  # relative to the largest half-edge: guards against a collapsed (unimodal) dimension
# Floor on the tied within-class variance in scaled units (half-edge = 1): a class spread below 1 % of the half-edge
# (a small training set fitted exactly) would make the whitening amplify the float32 difference of PyTorch and ONNX
# Runtime (~1e-6 of a scaled latent) past the export's parity tolerance. Fashion-MNIST runs are above it (their
# largest whitening, at gamma 1e4, is ~30: a spread of ~3 %), so their geometry is unchanged.
MIN_SCALED_STD = 1e-2


class GeometryError(ValueError):
    """The latent does not form a usable binary encoding (duplicate codes, empty class...)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` (N, K) in float32 (the numpy oracle's; scipy's implementation)."""
    return _softmax(np.asarray(logits, dtype=np.float32), axis=1).astype(np.float32)


def code_string(code: np.ndarray) -> str:
    """±1 code -> "0101..." (1 = the high side of the midpoint)."""
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
    whiten: np.ndarray | None = None  # (d, d) whitening of the within-class residual in u (default: identity)

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
            raise GeometryError(
                f"expected centres ({k}, {d}) and whiten ({d}, {d}), got {self.centres.shape} and "
                f"{self.whiten.shape}"
            )

    # ------------------------------------------------------------------ derived parameters
    @property
    def latent_dim(self) -> int:
        return len(self.low)

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    @property
    def midpoint(self) -> np.ndarray:
        return 0.5 * (self.low + self.high)

    @property
    def half_edge(self) -> np.ndarray:
        a = 0.5 * (self.high - self.low)
        return np.maximum(a, MIN_HALF_EDGE * max(float(a.max(initial=0.0)), 1e-12))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        z_train: np.ndarray,
        pred: np.ndarray,
        labels: np.ndarray,
        classes: list[str] | None = None,
        num_classes: int | None = None,
        max_samples: int = 5000,
    ) -> VertexGeometry:
        """Fit peaks and codebook on the training latents of correctly classified samples (``pred == labels``)."""
        z = np.asarray(z_train, dtype=np.float64)
        pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
        if z.ndim != 2 or len(z) != len(pred) or len(pred) != len(labels):
            raise GeometryError(
                f"expected z (N, d), pred (N,), labels (N,); got {z.shape}, {pred.shape}, {labels.shape}"
            )
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
        u_means = (means - geo.midpoint) / geo.half_edge
        geo.codes = np.where(u_means > 0, 1.0, -1.0).astype(np.float32)
        geo.check_distinct()
        tied = TiedGaussian.fit((zc - geo.midpoint) / geo.half_edge, yc, k, min_var=MIN_SCALED_STD**2)
        geo.centres, geo.whiten = tied.centres.astype(np.float32), tied.whiten.astype(np.float32)
        return geo

    def check_distinct(self) -> None:
        seen: dict[str, list[str]] = {}
        for name, code in zip(self.classes, self.codes, strict=True):
            seen.setdefault(code_string(code), []).append(name)
        clashes = {c: n for c, n in seen.items() if len(n) > 1}
        if clashes:
            desc = "; ".join(
                f"classes {', '.join(map(repr, n))} share vertex {c}" for c, n in clashes.items()
            )
            raise GeometryError(
                f"duplicate class codes: {desc}. Expected {self.num_classes} distinct vertices: the latent is not a "
                "binary encoding with one vertex per class (train longer / with a larger gamma cap, or use a larger "
                "latent_dim)"
            )

    # ------------------------------------------------------------------ numpy oracle of training.score.VertexScore
    def scaled(self, z: np.ndarray) -> np.ndarray:
        """``u = (z - midpoint) / half_edge`` in float32."""
        midpoint = self.midpoint.astype(np.float32)
        half_edge = self.half_edge.astype(np.float32)
        return (np.asarray(z, dtype=np.float32) - midpoint) / half_edge

    def score(self, z: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs (besides logits and z) for latents ``z`` and ``logits``; float32 / int64 (oracle)."""
        z = np.asarray(z, dtype=np.float32)
        logits = np.asarray(logits, dtype=np.float32)
        u = self.scaled(z)
        s = np.where(u > 0, np.float32(1), np.float32(-1))
        pred = logits.argmax(axis=1)
        v_pred = self.codes[pred]
        dist_nearest_vertex = np.sqrt(np.mean((u - s) ** 2, axis=1, dtype=np.float32)).astype(np.float32)
        dist_predicted_vertex = np.sqrt(np.mean((u - v_pred) ** 2, axis=1, dtype=np.float32)).astype(
            np.float32
        )
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
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "midpoint": self.midpoint.tolist(),
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
        return cls(
            np.array(geo["low"]),
            np.array(geo["high"]),
            np.stack([parse_code(book[c]) for c in classes]),
            classes,
            None if sep is None else np.array(sep),
            np.array(geo["centres"]),
            np.array(geo["whiten"]),
        )


class MaxSoftmax:
    """Numpy oracle of :class:`training.score.SoftmaxScore` (reliability = max softmax probability)."""

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
