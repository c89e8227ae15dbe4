"""The compression loss and its geometric gamma schedule (Sbailò & Ghiringhelli)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def compression_penalty(z: torch.Tensor) -> torch.Tensor:
    """mean(z**2) over batch and latent dimensions, as in the authors' code."""
    return z.pow(2).mean()


def total_loss(
    logits: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(loss, ce, penalty)`` with ``loss = ce + gamma * penalty`` (gamma=0 -> plain CE)."""
    ce = F.cross_entropy(logits, labels)
    penalty = compression_penalty(z)
    return ce + gamma * penalty, ce, penalty


def shard_loss(
    logits: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, gamma: float, global_size: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(objective, loss, ce, penalty)`` for one rank's shard of a global batch of ``global_size`` samples.

    ``loss``, ``ce`` and ``penalty`` are the shard's means (zeros for an empty shard). The objective to
    differentiate is ``loss * world_size * n / global_size``: DistributedDataParallel averages gradients over the
    ranks, so the result is the gradient of the global batch mean of CE and of ``mean(z**2)``, also when the shards
    differ in size. An empty shard contributes ``0 * sum(outputs)``, a zero gradient that still takes part in the
    all-reduce.
    """
    n = len(labels)
    if n == 0:
        zero = torch.zeros((), device=logits.device)
        return 0.0 * (logits.sum() + z.sum()), zero, zero, zero
    loss, ce, penalty = total_loss(logits, z, labels, gamma)
    return loss * (world_size * n / global_size), loss, ce, penalty


@dataclass(frozen=True)
class GammaSchedule:
    """gamma(u) = min(cap, gamma0 * factor**u), where u counts epochs or optimiser steps (``per``).

    ``gamma0 = 0`` switches the penalty off (the baselines).
    """

    gamma0: float
    factor: float
    cap: float
    per: str = "epoch"

    def __post_init__(self) -> None:
        if self.per not in ("epoch", "step"):
            raise ValueError(f"per must be 'epoch' or 'step', got {self.per!r}")
        if self.gamma0 < 0 or self.factor < 1 or self.cap < self.gamma0:
            raise ValueError(
                f"expected gamma0 >= 0, factor >= 1 and cap >= gamma0; got {self.gamma0}, {self.factor}, {self.cap}"
            )

    @classmethod
    def reaching_cap(cls, gamma0: float, cap: float, units: int, per: str = "step") -> GammaSchedule:
        """A schedule whose factor makes gamma reach ``cap`` after ``units`` epochs/steps."""
        factor = math.exp(math.log(cap / gamma0) / max(units, 1)) if gamma0 > 0 else 1.0
        return cls(gamma0, factor, cap, per)

    def value(self, epoch: int, step: int) -> float:
        """gamma at a given 0-based epoch and global step."""
        if self.gamma0 == 0:
            return 0.0
        u = epoch if self.per == "epoch" else step
        log_g = math.log(self.gamma0) + u * math.log(self.factor)
        return float(min(self.cap, math.exp(min(log_g, math.log(self.cap)))))
