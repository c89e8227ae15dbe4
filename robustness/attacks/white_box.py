"""White-box access to a network returning ``(logits, z)`` or logits: the logits-only module and the Foolbox model."""

from __future__ import annotations

import foolbox as fb
import torch
from torch import nn


class LogitsOf(nn.Module):
    """``net(x)`` reduced to its logits (the networks of the bench return ``(logits, z)``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


class WhiteBox(fb.PyTorchModel):
    """Foolbox model over a network's logits that also hands the logits module to torchattacks."""

    def __init__(self, net: nn.Module, bounds: tuple[float, float] = (0.0, 1.0)):
        device = next(iter(net.parameters()), torch.zeros(0)).device
        self.logits_net = LogitsOf(net).eval()
        super().__init__(self.logits_net, bounds=bounds, device=device)


def white_box(net: nn.Module) -> WhiteBox:
    """Foolbox model over a network returning ``(logits, z)`` or logits."""
    return WhiteBox(net)


def logits_and_z(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` as ``(logits, z)``; a logits-only network gets ``z = logits``."""
    out = net(x)
    return out if isinstance(out, tuple) else (out, out)
