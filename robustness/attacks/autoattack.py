"""The AutoAttack components from torchattacks 3.5.1 (a port of Croce & Hein's code), built per ε.

APGD-CE (its CE replaced by the stable form), APGD-T (targeted DLR, all K−1 targets), FAB-T (all K−1 targets) and
Square; each builder is ``build(budget, logits_net, norm, eps, n_classes, seed)``.
"""

from __future__ import annotations

import torchattacks
from torch import nn

from robustness.attack_losses import log_ce
from robustness.attacks.spec import AttackBudget, Norm


class StableAPGDCE(torchattacks.APGD):
    """torchattacks' APGD with its cross-entropy replaced by :func:`robustness.attack_losses.log_ce` (log of the stable CE).

    torchattacks picks the per-row criterion by name; the "dlr" slot calls ``self.dlr_loss``, which is overridden
    here, so every other line of APGD (step-size halving, momentum, checkpoints, restarts) is the library's.
    """

    def __init__(self, model, **kwargs):
        super().__init__(model, loss="dlr", **kwargs)

    def dlr_loss(self, x, y):
        return log_ce(x, y)


TA_NORM = {"linf": "Linf", "l2": "L2"}


def apgd_ce(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return StableAPGDCE(
        net, norm=TA_NORM[norm], eps=eps, steps=b.apgd_steps, n_restarts=b.apgd_restarts, seed=seed
    )


def apgd_t(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.APGDT(
        net,
        norm=TA_NORM[norm],
        eps=eps,
        steps=b.apgd_steps,
        n_restarts=b.apgd_restarts,
        seed=seed,
        n_classes=n_classes,
    )


def fab_t(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.FAB(
        net,
        norm=TA_NORM[norm],
        eps=eps,
        steps=b.fab_steps,
        n_restarts=1,
        seed=seed,
        multi_targeted=True,
        n_classes=n_classes,
    )


def square(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.Square(
        net, norm=TA_NORM[norm], eps=eps, n_queries=b.square_queries, n_restarts=1, seed=seed, loss="margin"
    )
