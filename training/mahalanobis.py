"""Class centres and tied within-class covariance: the one whitening / Mahalanobis distance of the project.

Fitted on features ``x`` (N, d) with labels in ``0..K-1``:

* ``centres[k]`` = mean of class k's rows;
* ``Σ`` = pooled within-class covariance ``Σ_i (x_i - c_{y_i})(x_i - c_{y_i})ᵀ / (N - K)`` (the unbiased pooled
  estimate), plus a ridge of ``ridge`` × its mean variance on the diagonal so that a collapsed direction stays
  invertible;
* ``whiten`` = ``W`` with ``W Wᵀ = Σ⁻¹`` (Cholesky factor of ``Σ⁻¹``), so the squared Mahalanobis distance of x to
  centre k is ``|(x - c_k) W|²``.

Used by :meth:`training.reliability.VertexGeometry.fit` (on scaled latents) and by the Mahalanobis OOD detector
(:class:`robustness.ood.MahalanobisDetector`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RIDGE = 1e-6


@dataclass(frozen=True)
class TiedGaussian:
    """Class centres (K, d) and whitening ``W`` (d, d) of a tied-covariance Gaussian class model (float64)."""

    centres: np.ndarray
    whiten: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        labels: np.ndarray,
        num_classes: int | None = None,
        ridge: float = DEFAULT_RIDGE,
        centres: np.ndarray | None = None,
        min_var: float = 0.0,
    ) -> TiedGaussian:
        """Fit on ``x`` (N, d) with integer ``labels`` (N,); every class in ``0..num_classes-1`` needs a row.

        ``centres`` (K, d) fixes the centres (e.g. ideal vertices) instead of estimating them as class means; the
        covariance formula is the same. ``min_var``: a floor on the covariance's eigenvalues (applied only when one
        is below it), for training sets fitted so tightly that the whitening would amplify float32 rounding."""
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(labels).reshape(-1)
        k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        empty = [c for c in range(k) if not np.any(labels == c)]
        if x.ndim != 2 or len(x) != len(labels) or empty:
            raise ValueError(
                f"expected x (N, d) and labels (N,) covering classes 0..{k - 1}; got {x.shape}, "
                f"{labels.shape}, classes without rows: {empty}"
            )
        if centres is None:
            centres = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
        centres = np.asarray(centres, dtype=np.float64)
        r = x - centres[labels]
        cov = r.T @ r / max(len(r) - k, 1)
        cov += ridge * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
        if min_var > 0:
            vals, vecs = np.linalg.eigh(cov)
            if vals.min() < min_var:
                cov = (vecs * np.maximum(vals, min_var)) @ vecs.T
        return cls(centres, np.linalg.cholesky(np.linalg.inv(cov)))

    def sq_dist(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances (N, K) of each row of ``x`` to each class centre."""
        x = np.asarray(x, dtype=np.float64)
        return np.stack([(((x - c) @ self.whiten) ** 2).sum(axis=1) for c in self.centres], axis=1)
