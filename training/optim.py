"""The optimiser and the two schedules of a run: the backbone's learning rate per epoch and gamma per epoch/step.

Steps count optimiser steps of the global batch (``TrainConfig.batch_size``), so both schedules mean the same at
every world size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from training.config import GammaPer, TrainConfig, choices
from training.models import Classifier


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimiser steps in one epoch over ``n_train`` training samples (global batches)."""
    return math.ceil(n_train / cfg.batch_size)


@dataclass(frozen=True)
class GammaSchedule:
    """gamma(u) = min(cap, gamma0 * factor**u), where u counts epochs or optimiser steps (``per``).

    ``gamma0 = 0`` switches the penalty off (the baselines).
    """

    gamma0: float
    factor: float
    cap: float
    per: GammaPer = "epoch"

    def __post_init__(self) -> None:
        if self.per not in choices("gamma_per"):
            raise ValueError(f"per must be one of {', '.join(choices('gamma_per'))}, got {self.per!r}")
        if self.gamma0 < 0 or self.factor < 1 or self.cap < self.gamma0:
            raise ValueError(
                f"expected gamma0 >= 0, factor >= 1 and cap >= gamma0; got {self.gamma0}, {self.factor}, {self.cap}"
            )

    @classmethod
    def reaching_cap(cls, gamma0: float, cap: float, units: int, per: GammaPer = "step") -> GammaSchedule:
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


def resolve_schedule(cfg: TrainConfig, n_train: int) -> TrainConfig:
    """``cfg`` as it trains on ``n_train`` samples: at least ``cfg.min_steps`` optimiser steps, and a gamma cap
    lowered by the factor the epochs grew.

    The rule behind the quick profile's ``min_steps=3000``. gamma's ramp and the learning-rate schedule are laid over
    the run's optimiser steps; on a small dataset 20 epochs are too few steps for the network to learn before gamma
    reaches its cap (sklearn's digits: 240 steps, validation accuracy falls to chance), and a small training set is
    soon fitted exactly, after which the penalty alone pulls the classes together (43 images, 2,000 steps, cap 100:
    two classes share a code). So when ``epochs`` give fewer than ``min_steps`` steps, the run trains ``k`` times the
    epochs (``k = ceil(min_steps / steps_per_epoch) / epochs``) and its gamma cap is ``k`` times lower (digits: 273
    epochs, cap 7.3). A dataset with ``min_steps * batch_size / epochs`` samples or more (19,200 at the quick
    profile; Fashion-MNIST has 54,000) trains exactly as configured. Idempotent: a resolved config resolves to itself.
    """
    spe = steps_per_epoch(cfg, n_train)
    needed = math.ceil(cfg.min_steps / spe) if cfg.min_steps > 0 else 0
    if needed <= cfg.epochs:
        return cfg
    cap = max(cfg.gamma0, cfg.gamma_cap * cfg.epochs / needed)
    return replace(cfg, epochs=needed, gamma_cap=cap)


def gamma_schedule(cfg: TrainConfig, steps_per_epoch: int) -> GammaSchedule:
    """The run's gamma schedule (gamma = 0 for the unpenalised variants)."""
    if not cfg.penalised:
        return GammaSchedule(0.0, 1.0, 0.0)
    if cfg.gamma_ramp is not None:
        units = cfg.epochs * (steps_per_epoch if cfg.gamma_per == "step" else 1)
        return GammaSchedule.reaching_cap(
            cfg.gamma0, cfg.gamma_cap, round(cfg.gamma_ramp * units), cfg.gamma_per
        )
    return GammaSchedule(cfg.gamma0, cfg.gamma_factor, cfg.gamma_cap, cfg.gamma_per)


def full_gamma_epoch(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The first 0-based epoch trained with gamma at its cap throughout, under ``cfg``'s schedule (the last epoch if
    there is none). The same for every variant: a baseline gets the epoch of the penalised run with its config, so
    that ``--adv-select robust`` chooses both from the same epochs."""
    schedule = gamma_schedule(replace(cfg, variant="bin_enc"), steps_per_epoch)
    for epoch in range(cfg.epochs):
        if schedule.value(epoch, epoch * steps_per_epoch) >= schedule.cap * (1 - 1e-9):
            return epoch
    return cfg.epochs - 1


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the backbone learning rate at a 0-based epoch (the output layer's stays constant)."""
    if cfg.lr_schedule == "cosine":
        floor = cfg.lr_min / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    if cfg.lr_schedule == "step":
        if epoch < cfg.lr_step_start:
            return 1.0
        return cfg.lr_step_factor ** ((epoch - cfg.lr_step_start) // cfg.lr_step_every + 1)
    return 1.0  # "constant", the one value left (TrainConfig.validate admits no other)


def make_optimizer(model: Classifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: ``body`` (scheduled learning rate) and ``head`` (the output layer)."""
    head = list(model.classifier.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.AdamW(
        [
            {"params": body, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "body"},
            {"params": head, "lr": cfg.head_lr, "weight_decay": cfg.head_weight_decay, "name": "head"},
        ]
    )


def set_learning_rates(opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> None:
    """Apply the epoch's learning rates: scheduled for ``body``, constant ``head_lr`` for ``head``."""
    for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(cfg, epoch) if group["name"] == "body" else cfg.head_lr
