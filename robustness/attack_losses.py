"""Numerically stable attack losses on logits (per row; larger = closer to fooling the model).

Float32 cross-entropy saturates: once ``p_y`` rounds to 1 its input gradient is exactly zero (logit margins above
~17), so CE-driven attacks stall on confident models. Every gradient attack of the bench uses one of these instead:

* :func:`margin` — the C&W logit margin ``max_{j≠y} l_j − l_y`` (never saturates);
* :func:`stable_ce` — cross-entropy written as ``softplus(logsumexp_{j≠y} l_j − l_y)`` and evaluated in float64
  (its value never rounds to 0, but its gradient ``sigmoid(·)`` still underflows once it is cast back into a
  float32 network: logit margins beyond ~100);
* :func:`log_ce` — ``log`` of that cross-entropy, what the CE attacks ascend: a monotone transform, so the ascent
  direction, the sign step and APGD's "did the loss increase" tests are CE's, but its gradient tends to the
  logsumexp margin's as CE → 0 and never vanishes;
* :func:`targeted_margin` — ``l_t − max_{j≠t} l_j`` (≥ 0 once the prediction is ``t``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _others(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``logits`` with column ``cls[i]`` of row ``i`` set to −inf."""
    rows = torch.arange(len(cls), device=logits.device)
    other = logits.clone()
    other[rows, cls] = -torch.inf
    return other


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{j≠y} l_j − l_y`` per row (> 0 once misclassified)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    return _others(logits, labels).amax(dim=1) - own


def stable_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row as ``softplus(logsumexp_{j≠y} l_j − l_y)`` in float64 (same value as CE)."""
    lg = logits.double()
    own = lg.gather(1, labels[:, None]).squeeze(1)
    return F.softplus(torch.logsumexp(_others(lg, labels), dim=1) - own)


def log_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log CE`` per row, stable at any margin: ``m`` where ``m = logsumexp_{j≠y} l_j − l_y < −30`` (there
    ``log softplus(m) = m + O(e^m)``), else ``log softplus(m)`` (float64)."""
    lg = logits.double()
    own = lg.gather(1, labels[:, None]).squeeze(1)
    m = torch.logsumexp(_others(lg, labels), dim=1) - own
    return torch.where(m < -30.0, m, torch.log(F.softplus(m.clamp(min=-30.0))))


def targeted_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``l_t − max_{j≠t} l_j`` per row (> 0 once the prediction is ``t``)."""
    return -margin(logits, target)


LOSSES = {"ce": log_ce, "margin": margin}
