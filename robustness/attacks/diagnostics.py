"""Input-gradient norms at the clean points (the gradient-masking check of :mod:`robustness.sanity`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustness.attack_losses import LOSSES
from robustness.attacks.white_box import logits_and_z


def input_gradient_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Per point L2 norms of the input gradients of float32 CE (what a naive attack would use), the CE attacks' objective (log CE) and
    the logit margin at the clean points."""
    out: dict[str, list] = {"ce_float32": [], "ce": [], "margin": []}
    net.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].clone().requires_grad_(True)
        yb = y[i : i + batch_size]
        logits, _ = logits_and_z(net, xb)
        losses = {
            "ce_float32": nn.functional.cross_entropy(logits, yb, reduction="sum"),
            "ce": LOSSES["ce"](logits, yb).sum(),
            "margin": LOSSES["margin"](logits, yb).sum(),
        }
        for k, (name, loss) in enumerate(losses.items()):
            (g,) = torch.autograd.grad(loss, xb, retain_graph=k < len(losses) - 1)
            out[name].append(g.flatten(1).double().norm(dim=1).detach().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in out.items()}
