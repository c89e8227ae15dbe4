"""Post-hoc OOD detectors and the OOD evaluation (the sets they are evaluated on: :mod:`robustness.ood_sets`).

Detectors (``fit(train features)`` then ``score(features)``, higher = more in-distribution): the artifact's
``reliability``, ``max_softmax``, ``energy`` (logsumexp of the logits, T = 1), ``max_logit``, ``mahalanobis``
(:class:`training.mahalanobis.TiedGaussian` on the latent ``z`` of training data; score = -min_k squared
distance) and ``knn`` (L2-normalised ``z``; score = -distance to the k-th nearest training latent, sklearn
NearestNeighbors). ``z`` is what the model's classifier layer sees: the 8-d latent for the penalised heads, the
256-d feature for ``no_pen``.

The evaluation (:func:`model_features`, :func:`evaluation_points`, :func:`ood_table`) is the one pipeline of the
bench and of ``scripts/ood_eval.py``: the same point counts and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from robustness import detection_metrics as M
from training.inference import forward_batches
from training.mahalanobis import DEFAULT_RIDGE, TiedGaussian
from training.score import SoftmaxScore, VertexScore


# --------------------------------------------------------------------------- detectors
@dataclass
class Features:
    logits: np.ndarray  # (N, K) float
    z: np.ndarray  # (N, d) float
    reliability: np.ndarray | None = None  # (N,) the artifact's score


class Detector:
    name = "detector"

    def fit(self, train: Features, labels: np.ndarray) -> Detector:
        return self

    def score(self, f: Features) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class ReliabilityDetector(Detector):
    name = "reliability"

    def score(self, f):
        if f.reliability is None:
            raise ValueError("features carry no reliability score")
        return np.asarray(f.reliability, dtype=np.float64)


def log_max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log p`` and ``log(1 - p)`` of the max-softmax probability ``p``, float64, exact at any logit margin.

    ``p`` itself rounds to exactly 1 once the margin passes ~17 (float32) or ~37 (float64): most test points of a
    plain classifier trained to a small CE (69% of no_pen's at 20 epochs, in float32), which then tie.
    """
    lo = np.asarray(logits, dtype=np.float64)
    rows, top = np.arange(len(lo)), lo.argmax(axis=1)
    rest = lo.copy()
    rest[rows, top] = -np.inf
    lse = logsumexp(lo, axis=1)
    return lo[rows, top] - lse, logsumexp(rest, axis=1) - lse


class MaxSoftmaxDetector(Detector):
    """Max-softmax, ranked by ``log p - log(1 - p)`` (monotone in ``p``, so the same AUROC where ``p`` does not
    round to 1, and no ties where it would)."""

    name = "max_softmax"

    def score(self, f):
        return self.from_log(*log_max_softmax(f.logits))

    @staticmethod
    def from_log(log_p: np.ndarray, log_rest: np.ndarray) -> np.ndarray:
        """The score from :func:`log_max_softmax`'s ``log p`` and ``log(1 - p)``."""
        return log_p - log_rest


class EnergyDetector(Detector):
    name = "energy"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def score(self, f):
        return self.temperature * logsumexp(np.asarray(f.logits, dtype=np.float64) / self.temperature, axis=1)


class MaxLogitDetector(Detector):
    name = "max_logit"

    def score(self, f):
        return np.asarray(f.logits, dtype=np.float64).max(axis=1)


class MahalanobisDetector(Detector):
    """:class:`training.mahalanobis.TiedGaussian` fitted on training ``z``; score = -min_k squared distance."""

    name = "mahalanobis"

    def __init__(self, ridge: float = DEFAULT_RIDGE):
        self.ridge = ridge

    def fit(self, train, labels):
        self.model = TiedGaussian.fit(train.z, labels, ridge=self.ridge)
        return self

    def score(self, f):
        return -self.model.sq_dist(f.z).min(axis=1)


class KNNDetector(Detector):
    """Sun et al. 2022: -distance to the k-th nearest L2-normalised training latent."""

    name = "knn"

    def __init__(self, k: int = 10):
        self.k = k

    @staticmethod
    def _normalise(z):
        z = np.asarray(z, dtype=np.float64)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def fit(self, train, labels):
        from sklearn.neighbors import NearestNeighbors

        bank = self._normalise(train.z)
        self.k_eff = min(self.k, len(bank))
        self.nn = NearestNeighbors(n_neighbors=self.k_eff).fit(bank)
        return self

    def score(self, f):
        dist, _ = self.nn.kneighbors(self._normalise(f.z), n_neighbors=self.k_eff)
        return -dist[:, -1]


DETECTORS: dict[str, Callable[[], Detector]] = {
    "reliability": ReliabilityDetector,
    "max_softmax": MaxSoftmaxDetector,
    "energy": EnergyDetector,
    "max_logit": MaxLogitDetector,
    "mahalanobis": MahalanobisDetector,
    "knn": KNNDetector,
}


def fit_detectors(
    train: Features, labels: np.ndarray, names: tuple[str, ...] = tuple(DETECTORS), knn_k: int = 10
) -> dict[str, Detector]:
    out = {}
    for name in names:
        if name == "reliability" and train.reliability is None:
            continue
        det = KNNDetector(knn_k) if name == "knn" else DETECTORS[name]()
        out[name] = det.fit(train, labels)
    return out


# --------------------------------------------------------------------------- the evaluation pipeline
def subsample(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, n_total)`` rows drawn without replacement (all rows, in order, if ``n`` is None)."""
    return np.sort(
        np.random.default_rng(seed).permutation(n_total)[: n_total if n is None else min(n, n_total)]
    )


def evaluation_points(
    n_test: int, n_train: int, n_id: int | None, n_fit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(id_idx, fit_idx)``: the ID test points (drawn with ``seed + 2``) and the training points the detectors are
    fitted on (``seed + 3``); the OOD sets take ``n_ood`` points each from :func:`make_ood_sets` with ``seed``."""
    return subsample(n_test, n_id, seed + 2), subsample(n_train, n_fit, seed + 3)


def score_outputs(
    score: VertexScore | SoftmaxScore, logits: np.ndarray, z: np.ndarray
) -> dict[str, np.ndarray]:
    """``logits`` and the score module's outputs (numpy, the artifact's output names)."""
    with torch.no_grad():
        out = score(torch.from_numpy(logits), torch.from_numpy(z))
    return {"logits": logits, **{k: v.numpy() for k, v in out._asdict().items()}}


def model_features(
    model: nn.Module,
    score: VertexScore | SoftmaxScore | None,
    images: np.ndarray,
    batch_size: int = 512,
    device: str = "cpu",
) -> Features:
    """Logits and z of uint8 ``images`` (:func:`training.inference.forward_batches`) and, with a score module,
    its reliability."""
    logits, z = forward_batches(model, images, batch_size, device)
    rel = None if score is None or not len(logits) else score_outputs(score, logits, z)["reliability"]
    return Features(logits, z, rel)


def detector_scores(detectors: dict[str, Detector], f: Features) -> dict[str, np.ndarray]:
    return {name: d.score(f) for name, d in detectors.items()}


def ood_table(
    s_id: dict[str, np.ndarray],
    s_ood: dict[str, dict[str, np.ndarray]],
    roc_points: int = 0,
    n_boot: int = 0,
    boot_seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{set: {detector: metrics}}``: :func:`robustness.detection_metrics.ood_metrics` of ID vs each OOD set, plus a thinned
    ROC curve (``roc_points`` > 0) and a 95% bootstrap interval of the AUROC (``n_boot`` > 0)."""
    table: dict[str, dict[str, dict]] = {}
    for set_name, scores in s_ood.items():
        table[set_name] = {}
        for det, s in scores.items():
            row = M.ood_metrics(s_id[det], s)
            if n_boot:
                row["auroc_ci95"] = list(M.bootstrap_interval(s_id[det], s, M.auroc, n_boot, boot_seed))
            if roc_points:
                row["roc"] = M.roc_points(s_id[det], s, roc_points)
            table[set_name][det] = row
    return table
