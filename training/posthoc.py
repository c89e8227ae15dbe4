"""Post-hoc reject scores on any classifier's feature layer, as torch modules (the attack and the export run them).

Every score maps ``(logits, z)`` to :class:`training.score.ScoreOutputs` and offers ``neg_log_reliability_to`` and
``accepted`` (the interface :class:`robustness.reject_option.RejectOption` attacks), so one module per detector serves
the adaptive attack, the ONNX graph and the served decision:

* ``max_softmax`` — :class:`training.score.SoftmaxScore`;
* ``mahalanobis`` — :class:`training.score.VertexScore` over :func:`latent_mahalanobis_geometry` (identity
  hypercube, so ``u = z``): ``reliability = exp(-sqrt(|(z - c_pred) W|² / d))``, the whitened distance of the
  feature vector to its predicted class's centre (class means and tied within-class whitening of correctly
  classified training features) — the score ``python -m training.export --model`` serves;
* ``energy`` and ``knn`` — :class:`LogisticScore` of a class-independent raw score ``s`` (energy: ``logsumexp``
  of the logits; KNN: minus the distance of the L2-normalised feature to its k-th nearest normalised training
  feature): ``reliability = sigmoid((s - ref) / scale)`` with ``ref`` and ``scale`` the median and standard
  deviation of ``s`` on the validation split (a monotone map of ``s``: the same ranking, a threshold in (0, 1)).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from training.mahalanobis import TiedGaussian
from training.reliability import VertexGeometry
from training.score import ScoreOutputs, SoftmaxScore, VertexScore, score_module

DETECTOR_SCORES = ("max_softmax", "energy", "mahalanobis", "knn")


def latent_mahalanobis_geometry(
    z: np.ndarray, pred: np.ndarray, labels: np.ndarray, num_classes: int, classes: list[str] | None = None
) -> VertexGeometry:
    """Centres and whitening of the features ``z`` of correctly classified training points, with ``u = z`` (a class
    with no correctly classified point keeps all its points)."""
    ok = pred == labels
    ok |= np.isin(labels, [c for c in range(num_classes) if not np.any(ok & (labels == c))])
    tied = TiedGaussian.fit(z[ok], labels[ok], num_classes)
    d = z.shape[1]
    codes = np.where(tied.centres > 0, 1.0, -1.0)
    return VertexGeometry(
        -np.ones(d), np.ones(d), codes, list(classes or []), centres=tied.centres, whiten=tied.whiten
    )


class LogisticScore(nn.Module):
    """``reliability = sigmoid((s - ref) / scale)`` of a class-independent raw score ``s`` (higher = more reliable);
    ``nearest_vertex_class = argmax``; the three distances are ``1 - reliability``."""

    name = "logistic"

    def __init__(self, ref: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.register_buffer("ref", torch.tensor(float(ref)))
        self.register_buffer("scale", torch.tensor(max(float(scale), 1e-12)))

    def raw(self, logits: Tensor, z: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _log_rel(self, logits: Tensor, z: Tensor) -> Tensor:
        return F.logsigmoid((self.raw(logits, z) - self.ref) / self.scale)

    def forward(self, logits: Tensor, z: Tensor) -> ScoreOutputs:
        rel = torch.exp(self._log_rel(logits, z))
        dist = 1.0 - rel
        return ScoreOutputs(logits.argmax(dim=1), dist, dist, dist, rel)

    def neg_log_reliability_to(self, logits: Tensor, z: Tensor, cls: Tensor) -> Tensor:
        """``-log reliability`` (the same for every class: the raw score does not depend on the prediction)."""
        return -self._log_rel(logits, z)

    def accepted(self, logits: Tensor, z: Tensor, threshold: float) -> Tensor:
        return torch.exp(self._log_rel(logits, z)) >= threshold

    def calibrated(self, logits: np.ndarray, z: np.ndarray) -> LogisticScore:
        """Set ``ref`` / ``scale`` to the median / standard deviation of the raw score on ``(logits, z)``."""
        with torch.no_grad():
            s = self.raw(torch.from_numpy(logits), torch.from_numpy(z)).double().numpy()
        self.ref.fill_(float(np.median(s)))
        self.scale.fill_(max(float(s.std()), 1e-6))
        return self


class EnergyScore(LogisticScore):
    """Energy (Liu et al. 2020, T = 1): ``s = logsumexp(logits)``."""

    name = "energy"

    def raw(self, logits: Tensor, z: Tensor) -> Tensor:
        return torch.logsumexp(logits, dim=1)


class KNNScore(LogisticScore):
    """KNN (Sun et al. 2022): ``s = -`` distance of the L2-normalised ``z`` to its k-th nearest normalised
    training feature (the bank is a constant of the module)."""

    name = "knn"

    def __init__(self, bank: np.ndarray, k: int = 10):
        super().__init__()
        b = torch.as_tensor(np.asarray(bank, dtype=np.float32))
        self.register_buffer("bank", F.normalize(b, dim=1))
        self.k = int(min(k, len(b)))

    def raw(self, logits: Tensor, z: Tensor) -> Tensor:
        zn = F.normalize(z, dim=1)
        d2 = (2.0 - 2.0 * zn @ self.bank.T).clamp_min(0.0)  # squared distance of unit vectors
        kth = torch.topk(d2, self.k, dim=1, largest=False).values[:, -1]
        return -torch.sqrt(kth + 1e-12)


def fit_detector_score(
    name: str,
    z_fit: np.ndarray,
    logits_fit: np.ndarray,
    labels_fit: np.ndarray,
    logits_val: np.ndarray,
    z_val: np.ndarray,
    num_classes: int,
    knn_k: int = 10,
    classes: list[str] | None = None,
) -> nn.Module:
    """The score module of detector ``name`` (:data:`DETECTOR_SCORES`), fitted on the fit split's features (the
    Mahalanobis centres / whitening, the KNN bank) and scaled on the validation split (energy, KNN)."""
    if name == "max_softmax":
        return SoftmaxScore()
    if name == "mahalanobis":
        return score_module(
            latent_mahalanobis_geometry(z_fit, logits_fit.argmax(1), labels_fit, num_classes, classes)
        )
    if name == "energy":
        return EnergyScore().calibrated(logits_val, z_val)
    if name == "knn":
        return KNNScore(z_fit, knn_k).calibrated(logits_val, z_val)
    raise ValueError(f"unknown detector score {name!r}; expected one of {', '.join(DETECTOR_SCORES)}")


class FeatureScored(nn.Module):
    """Any ``x -> (logits, z)`` model + a score module: ``pixels -> OUTPUT_NAMES`` (the exported graph)."""

    def __init__(self, model: nn.Module, score: nn.Module):
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, pixels: Tensor):
        logits, z = self.model(pixels)
        return (logits, torch.softmax(logits, dim=1), z, *self.score(logits, z))


__all__ = [
    "DETECTOR_SCORES",
    "EnergyScore",
    "FeatureScored",
    "KNNScore",
    "LogisticScore",
    "VertexScore",
    "fit_detector_score",
    "latent_mahalanobis_geometry",
]
