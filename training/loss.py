"""The compression loss (Sbailò & Ghiringhelli); its weight gamma follows :class:`training.optim.GammaSchedule`."""

from __future__ import annotations

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
    logits: torch.Tensor,
    z: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    global_size: int,
    world_size: int,
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
