"""The reliability score as one torch module: the exported graph and the adaptive attack both run this code.

:class:`VertexScore` (``bin_enc``) and :class:`SoftmaxScore` (the other variants) map ``(logits, z)`` to
:class:`ScoreOutputs`, in the order of the artifact's outputs after ``probs`` and ``z``
(:data:`serving.artifact_format.OUTPUT_NAMES`). The vertex score's definition is :class:`VertexScore`'s docstring and
nowhere else; :meth:`training.reliability.VertexGeometry.score` is the numpy oracle the tests hold it against.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch import Tensor, nn

from training.reliability import SOFTMAX_SCORE, VERTEX_SCORE, VertexGeometry


class ScoreOutputs(NamedTuple):
    """Per-row score outputs (the graph outputs after ``probs`` and ``z``)."""

    nearest_vertex_class: Tensor  # int64
    dist_nearest_vertex: Tensor
    dist_predicted_vertex: Tensor
    dist_class_centre: Tensor
    reliability: Tensor


class VertexScore(nn.Module):
    """Vertex reliability: ``reliability = exp(-dist_class_centre)``, in (0, 1], higher = more reliable.

    Scaled coordinates ``u = (z - midpoint) / half_edge`` put every vertex of the fitted hypercube at
    ``u in {-1, +1}^d`` (d = latent width); ``pred = argmax(logits)``; ``codes[k]`` is class k's vertex (±1).

    - ``dist_class_centre = sqrt(|(u - centres[pred]) @ whiten|^2 / d)``: Mahalanobis distance of u to the predicted
      class's centre (its mean u on correctly classified training latents), in units of the tied within-class
      spread (``whiten @ whiten.T`` = inverse within-class covariance); 0 on the centre, so reliability 1 there;
    - ``dist_predicted_vertex = sqrt(mean_j (u_j - codes[pred]_j)^2)``: RMS distance to the predicted class's vertex;
    - ``dist_nearest_vertex = sqrt(mean_j (u_j - sign(u_j))^2)`` with ``sign(0) = -1``: RMS distance to the nearest
      vertex;
    - ``nearest_vertex_class``: the class whose code is ``sign(u)``, or -1 when that vertex holds no class.

    An input is accepted when the reliability of its predicted class is ``>= threshold`` (calibrated on the
    validation split at export).
    """

    name = VERTEX_SCORE

    def __init__(self, geometry: VertexGeometry):
        super().__init__()
        f32 = torch.float32
        self.register_buffer("midpoint", torch.tensor(geometry.midpoint, dtype=f32))
        self.register_buffer("half_edge", torch.tensor(geometry.half_edge, dtype=f32))
        self.register_buffer("codes", torch.tensor(geometry.codes, dtype=f32))
        self.register_buffer("centres", torch.tensor(geometry.centres, dtype=f32))
        self.register_buffer("whiten", torch.tensor(geometry.whiten, dtype=f32))
        self.latent_dim = float(geometry.latent_dim)

    def scaled(self, z: Tensor) -> Tensor:
        """``u = (z - midpoint) / half_edge``."""
        return (z - self.midpoint) / self.half_edge

    def _dist_class_centre_u(self, u: Tensor, cls: Tensor) -> Tensor:
        w = (u - self.centres[cls]) @ self.whiten
        return torch.sqrt((w**2).mean(dim=1))

    def forward(self, logits: Tensor, z: Tensor) -> ScoreOutputs:
        pred = logits.argmax(dim=1)
        u = self.scaled(z)
        s = torch.where(u > 0, 1.0, -1.0)
        dist_nearest_vertex = torch.sqrt(((u - s) ** 2).mean(dim=1))
        dist_predicted_vertex = torch.sqrt(((u - self.codes[pred]) ** 2).mean(dim=1))
        best, idx = (s @ self.codes.T).max(dim=1)
        nearest = torch.where(best == self.latent_dim, idx, torch.full_like(idx, -1))
        dist_class_centre = self._dist_class_centre_u(u, pred)
        return ScoreOutputs(
            nearest,
            dist_nearest_vertex,
            dist_predicted_vertex,
            dist_class_centre,
            torch.exp(-dist_class_centre),
        )

    def dist_class_centre_to(self, z: Tensor, cls: Tensor) -> Tensor:
        """``dist_class_centre`` of each row of ``z`` to the centre of class ``cls[row]`` (differentiable)."""
        return self._dist_class_centre_u(self.scaled(z), cls)

    def neg_log_reliability_to(self, logits: Tensor, z: Tensor, cls: Tensor) -> Tensor:
        """``-log`` of the reliability the input would have if it were predicted as ``cls`` (per row)."""
        return self.dist_class_centre_to(z, cls)

    def accepted(self, logits: Tensor, z: Tensor, threshold: float) -> Tensor:
        """Reliability of the predicted class ``>= threshold`` (bool, per row)."""
        return torch.exp(-self.dist_class_centre_to(z, logits.argmax(dim=1))) >= threshold


class SoftmaxScore(nn.Module):
    """Max-softmax reliability: ``reliability = max_k softmax(logits)_k``; ``nearest_vertex_class = argmax``;
    the three distances are ``1 - reliability``. ``z`` is not used."""

    name = SOFTMAX_SCORE

    def forward(self, logits: Tensor, z: Tensor) -> ScoreOutputs:
        maxp, nearest = torch.softmax(logits, dim=1).max(dim=1)
        dist = 1.0 - maxp
        return ScoreOutputs(nearest, dist, dist, dist, maxp)

    def neg_log_reliability_to(self, logits: Tensor, z: Tensor, cls: Tensor) -> Tensor:
        """``-log softmax(logits)_cls`` per row (computed with ``log_softmax``, stable for large logits)."""
        return -torch.log_softmax(logits, dim=1).gather(1, cls.reshape(-1, 1)).reshape(-1)

    def accepted(self, logits: Tensor, z: Tensor, threshold: float) -> Tensor:
        """Max softmax probability ``>= threshold`` (bool, per row)."""
        return torch.softmax(logits, dim=1).max(dim=1).values >= threshold


def score_module(geometry: VertexGeometry | None) -> VertexScore | SoftmaxScore:
    """The vertex score for a fitted geometry, max-softmax without one."""
    return SoftmaxScore() if geometry is None else VertexScore(geometry)


def score_from_metadata(metadata: dict) -> VertexScore | SoftmaxScore:
    """The score module of an exported artifact, rebuilt from its metadata (``serving.artifact_format`` schema)."""
    if metadata["score"]["name"] == VERTEX_SCORE:
        return VertexScore(VertexGeometry.from_metadata(metadata))
    return SoftmaxScore()


def score_definition(score: VertexScore | SoftmaxScore) -> str:
    """The definition text of ``score`` (its class docstring, one line) for the artifact's metadata."""
    return " ".join(inspect.getdoc(type(score)).split())
