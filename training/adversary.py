"""The training adversary of ``--adv-train``: L∞ FGSM with a random start ("fast AT", Wong, Rice & Kolter 2020),
N-FGSM (de Jorge et al. 2022) or PGD (Madry et al. 2018), in [0, 1] pixel space (the normalisation is inside the
model), and the per-epoch robust validation check (``--adv-check``) that shows catastrophic and robust overfitting
while training runs."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from training.config import TrainConfig


def adversarial_examples(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, start: torch.Tensor
) -> torch.Tensor:
    """Perturbations of ``x`` that raise the cross-entropy of ``net``, L∞ within ``cfg.adv_eps`` (N-FGSM: 3·eps).

    ``start``: uniform noise in [-1, 1] shaped like ``x`` (the random start, drawn by the caller so that it is
    the same at every world size). FGSM starts within ``eps`` and takes one step of ``1.25·eps``; PGD takes
    ``cfg.adv_steps`` steps of ``2.5·eps/steps``; both project onto the ε-ball after every step. N-FGSM starts
    within ``2·eps`` and takes one step of ``eps`` without projecting back (the noise is what keeps single-step
    training from overfitting catastrophically), so its inputs lie within ``3·eps``. All stay in the image range;
    the parameters get no gradient from here.
    """
    eps = cfg.adv_eps
    if cfg.adv_train == "fgsm":
        steps, alpha, noise, radius = 1, 1.25 * eps, eps, eps
    elif cfg.adv_train == "nfgsm":
        steps, alpha, noise, radius = 1, eps, 2 * eps, 3 * eps
    else:  # "pgd", the one value left (TrainConfig.validate admits no other)
        steps, alpha, noise, radius = cfg.adv_steps, 2.5 * eps / cfg.adv_steps, eps, eps
    delta = ((x + noise * start).clamp(0.0, 1.0) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        logits, _ = net(x + delta)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), delta)
        delta = (
            (x + (delta.detach() + alpha * grad.sign()).clamp(-radius, radius)).clamp(0.0, 1.0) - x
        ).detach()
    return x + delta


CHECK_STEPS = 10  # PGD steps of the per-epoch robust validation check


def robust_accuracy(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, seed: int = 0, batch_size: int = 512
) -> float:
    """Accuracy of ``net`` (eval mode) on ``x`` under L∞ PGD-10 at ``cfg.adv_eps`` with one seeded random start.

    The check of ``--adv-check``: a weak attack next to the bench's (one restart, cross-entropy only), cheap enough
    to run after every epoch; it sees the FGSM-to-PGD gap of catastrophic overfitting, which clean accuracy does not.
    """
    pgd = replace(cfg, adv_train="pgd", adv_steps=CHECK_STEPS)
    start = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) - 1
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        adv = adversarial_examples(net, xb, yb, pgd, start[i : i + batch_size].to(xb.device))
        with torch.no_grad():
            correct += int((net(adv)[0].argmax(1) == yb).sum())
    net.train(was_training)
    return correct / max(len(x), 1)
