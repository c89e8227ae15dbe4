"""One epoch of training: what the epochs of a run share (:class:`TrainingRun`), the optimiser step on a global
batch (this rank's contiguous shard of it) and the pass over the training split in the epoch's seeded order."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from training.adversary import adversarial_examples
from training.augment import apply_shifts, shift_offsets
from training.config import TrainConfig
from training.data import DatasetSplits
from training.distributed import DistContext, all_reduce_sum, shard_bounds
from training.inference import to_tensor
from training.loss import shard_loss, total_loss
from training.models import Classifier, ModelConfig
from training.optim import GammaSchedule, set_learning_rates


class TrainingDiverged(RuntimeError):
    """Loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class TrainingRun:
    """What the epochs of one run share. ``model`` is what steps (DDP-wrapped when distributed), ``net`` the plain
    :class:`Classifier` inside it (evaluated and saved)."""

    cfg: TrainConfig
    model_cfg: ModelConfig
    out: Path
    ctx: DistContext
    device: torch.device
    data: DatasetSplits
    net: Classifier
    model: nn.Module
    opt: torch.optim.Optimizer
    schedule: GammaSchedule
    x_train: torch.Tensor
    y_train: torch.Tensor
    steps_per_epoch: int

    def check_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``adv_check`` validation images and labels (the same every epoch), on the run's device."""
        n = self.cfg.adv_check
        return (
            to_tensor(self.data.val.images[:n]).to(self.device),
            torch.from_numpy(self.data.val.labels[:n]).to(self.device),
        )


def train_step(
    run: TrainingRun, idx: torch.Tensor, rng: torch.Generator, epoch: int, i: int
) -> tuple[list[float], float]:
    """One optimiser step on the global batch ``idx``; returns its global sums (n·loss, n·ce, n·penalty, correct)
    and gamma. This rank computes its contiguous shard of the batch (see :func:`training.loss.shard_loss`)."""
    cfg, ctx = run.cfg, run.ctx
    n = len(idx)
    lo, hi = shard_bounds(n, ctx)
    xb = run.x_train[idx[lo:hi]]
    if (
        cfg.augment_shift > 0
    ):  # offsets drawn for the whole global batch: the generator advances alike on all ranks
        xb = apply_shifts(xb, shift_offsets(n, cfg.augment_shift, rng)[lo:hi], cfg.augment_shift)
    xb = xb.to(run.device, non_blocking=True)
    yb = run.y_train[idx[lo:hi]].to(run.device, non_blocking=True)
    if cfg.adv_train:  # the random start is drawn for the whole global batch too
        start = (2 * torch.rand((n, *xb.shape[1:]), generator=rng) - 1)[lo:hi].to(run.device)
        xb = adversarial_examples(run.net, xb, yb, cfg, start)
    gamma = run.schedule.value(epoch, epoch * run.steps_per_epoch + i)
    logits, z = run.model(xb)
    b = len(yb)
    if ctx.distributed:
        objective, loss, ce, pen = shard_loss(logits, z, yb, gamma, n, ctx.world_size)
    else:
        loss, ce, pen = total_loss(logits, z, yb, gamma)
        objective = loss
    sums = [loss.item() * b, ce.item() * b, pen.item() * b, float((logits.argmax(1) == yb).sum().item())]
    if ctx.distributed:
        sums = all_reduce_sum(torch.tensor(sums, dtype=torch.float64), ctx).tolist()
    if not math.isfinite(sums[0]):
        raise TrainingDiverged(
            f"loss became {sums[0] / n} at epoch {epoch + 1}, step {i + 1} (gamma={gamma:.3g}, "
            f"ce={sums[1] / n:.4g}, penalty={sums[2] / n:.4g}); the last good checkpoint in {run.out} is kept. "
            "Try a lower --lr, a slower gamma ramp or a smaller --gamma-cap."
        )
    run.opt.zero_grad(set_to_none=True)
    objective.backward()
    run.opt.step()
    return sums, gamma


def train_epoch(run: TrainingRun, epoch: int, progress: bool) -> dict:
    """One pass over the training split in this epoch's seeded order; the training half of the epoch's row."""
    cfg = run.cfg
    set_learning_rates(run.opt, cfg, epoch)
    rng = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(run.y_train), generator=rng)
    run.model.train()
    sums = {"loss": 0.0, "ce": 0.0, "penalty": 0.0, "correct": 0.0}
    t0 = time.perf_counter()
    bar = tqdm(
        range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False
    )
    for i in bar:
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        step_sums, gamma = train_step(run, idx, rng, epoch, i)
        for key, value in zip(sums, step_sums, strict=True):
            sums[key] += value
        if i % 50 == 0:
            bar.set_postfix(ce=f"{step_sums[1] / len(idx):.3f}", gamma=f"{gamma:.3g}")
    epoch_time = time.perf_counter() - t0
    n = len(run.y_train)
    return {
        "epoch": epoch,
        "train_loss": sums["loss"] / n,
        "train_ce": sums["ce"] / n,
        "train_penalty": sums["penalty"] / n,
        "train_acc": sums["correct"] / n,
        "epoch_time_s": epoch_time,
    }
