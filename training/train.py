"""The training loop. Checkpoints every epoch (atomically) and resumes exactly, in one process or data-parallel.

Under ``torchrun`` every process runs :func:`train`; each global batch (``TrainConfig.batch_size``) is drawn in the
single-process order and split into contiguous per-rank shards, and the loss of a shard is weighted by its share of
the global batch, so the optimiser steps are those of one process up to floating-point reduction order. Rank 0 alone
writes the run directory. See ``docs/distributed.md``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from serving.atomic_write import atomic_write_bytes
from training.adversary import adversarial_examples, robust_accuracy
from training.augment import apply_shifts, shift_offsets
from training.checkpoint import CHECKPOINT, atomic_torch_save, load_checkpoint
from training.collapse import collapse_verdict
from training.config import TrainConfig
from training.data import DatasetSplits, load_run_data
from training.distributed import (
    SINGLE,
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    local_device,
    shard_bounds,
)
from training.inference import evaluate, to_tensor
from training.jsonio import write_json_atomic
from training.loss import shard_loss, total_loss
from training.models import Classifier, ModelConfig, build_model, default_latent_dim
from training.optim import (
    GammaSchedule,
    full_gamma_epoch,
    gamma_schedule,
    lr_factor,
    make_optimizer,
    resolve_schedule,
    set_learning_rates,
    steps_per_epoch,
)
from training.run_metrics import run_metrics
from training.rundir import (
    CONFIG,
    HISTORY,
    METRICS,
    RunLock,
    RunLockedError,
    append_row,
    read_history,
    remove_unstarted,
)
from training.version import code_version

__all__ = ["RunResult", "TrainingDiverged", "model_config_for", "train"]

log = logging.getLogger(__name__)

ROBUST_BEST = "robust_best.pt"  # --adv-select robust: the weights of the best checked epoch so far
# Short epochs (a small dataset trained for many epochs) rewrite the checkpoint at most this often; the first and last
# epochs are always saved, and a resume continues from the last saved epoch as exactly as from any other.
CHECKPOINT_EVERY_S = 10.0


class TrainingDiverged(RuntimeError):
    """Loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    model: Classifier
    metrics: dict


def model_config_for(cfg: TrainConfig, data: DatasetSplits) -> ModelConfig:
    mean, std = data.channel_stats()
    return ModelConfig(
        backbone=cfg.backbone,
        variant=cfg.variant,
        num_classes=data.num_classes,
        latent_dim=cfg.latent_dim or default_latent_dim(data.num_classes),
        input_shape=data.input_shape,
        mean=mean,
        std=std,
    )


def resolve_config(cfg: TrainConfig, data: DatasetSplits) -> TrainConfig:
    """The settings the run trains with, as ``config.json`` records them: the latent width a class count implies when
    none is given, and the schedule of a small dataset (:func:`training.optim.resolve_schedule`)."""
    resolved = resolve_schedule(cfg, len(data.train))
    if resolved.epochs != cfg.epochs:
        log.info(
            "%d training samples: %d epochs of %d steps (at least %d optimiser steps; min_steps) and gamma cap "
            "%.3g (%.3g x %d/%d)",
            len(data.train),
            resolved.epochs,
            steps_per_epoch(cfg, len(data.train)),
            cfg.min_steps,
            resolved.gamma_cap,
            cfg.gamma_cap,
            cfg.epochs,
            resolved.epochs,
        )
    return replace(resolved, latent_dim=cfg.latent_dim or default_latent_dim(data.num_classes))


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


def _open_run(
    cfg: TrainConfig, out: Path, resume: bool, ctx: DistContext
) -> tuple[TrainConfig, dict | None, RunLock | None]:
    """On rank 0: take the run directory's writer lock and read the checkpoint to resume; every rank gets the
    (saved) config and checkpoint, or the same error."""
    lock, ckpt = None, None
    if ctx.is_main:
        try:
            if not resume and (out / CHECKPOINT).exists():
                raise FileExistsError(
                    f"{out} already holds a run; pass --resume to continue it or choose another --out"
                )
            lock = RunLock(out).acquire()
            ckpt = load_checkpoint(out) if resume else None
        except Exception as e:  # every rank must hear of it, or the others would wait forever
            if lock is not None:
                lock.release()
            expected = isinstance(e, (FileExistsError, FileNotFoundError, RunLockedError))
            broadcast_object(
                (None, e if expected else RuntimeError(f"rank 0 could not open {out}: {e!r}")), ctx
            )
            raise
    ckpt, err = broadcast_object((ckpt, None), ctx)
    if err is not None:
        raise err
    if ckpt is not None:
        saved = TrainConfig.from_dict(ckpt["train_config"])
        cfg = TrainConfig.from_dict({**saved.to_dict(), "device": cfg.device, "num_threads": cfg.num_threads})
    return cfg, ckpt, lock


def _build_run(
    cfg: TrainConfig, ckpt: dict | None, data: DatasetSplits, out: Path, ctx: DistContext
) -> TrainingRun:
    """Model (same initial weights on every rank), optimiser, schedule and training tensors; restores a checkpoint."""
    device = local_device(cfg.device, ctx)
    torch.manual_seed(cfg.seed)
    model_cfg = model_config_for(cfg, data)
    net = build_model(model_cfg)
    if ctx.distributed and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # batch statistics of the global batch
    net = net.to(device)
    opt = make_optimizer(net, cfg)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    model: nn.Module = net
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    spe = steps_per_epoch(cfg, len(data.train))
    return TrainingRun(
        cfg,
        model_cfg,
        out,
        ctx,
        device,
        data,
        net,
        model,
        opt,
        gamma_schedule(cfg, spe),
        to_tensor(data.train.images),
        torch.from_numpy(data.train.labels),
        spe,
    )


def _train_step(
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


def _train_epoch(run: TrainingRun, epoch: int, progress: bool) -> dict:
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
        step_sums, gamma = _train_step(run, idx, rng, epoch, i)
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


def _save_epoch(run: TrainingRun, train_row: dict, progress: bool, checkpoint: bool = True) -> None:
    """Rank 0: validate, append the epoch's row to metrics.jsonl and (``checkpoint``) rewrite the checkpoint."""
    cfg, epoch = run.cfg, train_row["epoch"]
    val = evaluate(run.net, run.data.val.images, run.data.val.labels, device=str(run.device))
    robust = {}
    if cfg.adv_train and cfg.adv_check > 0:
        t0 = time.perf_counter()
        robust["val_robust_acc"] = robust_accuracy(run.net, *run.check_points(), cfg, seed=cfg.seed)
        robust["check_time_s"] = time.perf_counter() - t0
    row = {
        **{k: v for k, v in train_row.items() if k != "epoch_time_s"},
        "val_acc": val["acc"],
        "val_ce": val["ce"],
        **robust,
        "gamma": run.schedule.value(epoch, (epoch + 1) * run.steps_per_epoch - 1),
        "lr": cfg.lr * lr_factor(cfg, epoch),
        "head_lr": cfg.head_lr,
        "epoch_time_s": train_row["epoch_time_s"],
        "world_size": run.ctx.world_size,
    }
    append_row(run.out / HISTORY, row)
    if cfg.adv_select == "robust" and epoch >= (first := full_gamma_epoch(cfg, run.steps_per_epoch)):
        # the best check so far comes from the history, not from unpickling the saved weights every epoch
        earlier = [r["val_robust_acc"] for r in read_history(run.out / HISTORY, epoch) if r["epoch"] >= first]
        if not earlier or row["val_robust_acc"] > max(earlier):
            atomic_torch_save(
                run.out / ROBUST_BEST,
                {"epoch": epoch, "val_robust_acc": row["val_robust_acc"], "model": run.net.state_dict()},
            )
    if checkpoint:
        _save_checkpoint(run, epoch)
    if progress and checkpoint:  # short epochs: a line every CHECKPOINT_EVERY_S
        rob = f" val_robust_acc {row['val_robust_acc']:.4f}" if "val_robust_acc" in row else ""
        tqdm.write(
            f"epoch {epoch + 1}/{cfg.epochs}: ce {row['train_ce']:.4f} val_acc {row['val_acc']:.4f}{rob} "
            f"gamma {row['gamma']:.3g} ({row['epoch_time_s']:.1f}s)"
        )


def _save_checkpoint(run: TrainingRun, epoch: int) -> None:
    cfg = run.cfg
    atomic_torch_save(
        run.out / CHECKPOINT,
        {
            "epoch": epoch,
            "model": run.net.state_dict(),
            "optimizer": run.opt.state_dict(),
            "train_config": cfg.to_dict(),
            "model_config": run.model_cfg.to_dict(),
            "classes": run.data.classes,
            "dataset": run.data.name,
        },
    )


def _select_robust(run: TrainingRun) -> dict:
    """Rank 0, after the last epoch of ``--adv-select robust``: load the best checked epoch's weights into the model
    and into the checkpoint (the run's model from now on); returns what ``metrics.json`` records of the choice."""
    best = torch.load(run.out / ROBUST_BEST, map_location=run.device, weights_only=False)
    run.net.load_state_dict(best["model"])
    ckpt = load_checkpoint(run.out)
    if ckpt.get("selected_epoch") != best["epoch"]:
        atomic_torch_save(
            run.out / CHECKPOINT, {**ckpt, "model": run.net.state_dict(), "selected_epoch": best["epoch"]}
        )
    return {
        "rule": "robust",
        "epoch": best["epoch"],
        "val_robust_acc": best["val_robust_acc"],
        "from_epoch": full_gamma_epoch(run.cfg, run.steps_per_epoch),
        "check_points": run.cfg.adv_check,
    }


def _record_start(run: TrainingRun, start_epoch: int) -> None:
    """Rank 0: write ``config.json`` (the settings the run trains with) and cut ``metrics.jsonl`` back to the epochs
    before ``start_epoch`` (a resumed run rewrites the rows of epochs it trains again)."""
    recorded = {"train": run.cfg.to_dict(), "model": run.model_cfg.to_dict(), "code_version": code_version()}
    if run.data.source is not None:
        recorded["data"] = run.data.source
    write_json_atomic(run.out / CONFIG, recorded)
    history = read_history(run.out / HISTORY, start_epoch)
    atomic_write_bytes(run.out / HISTORY, "".join(json.dumps(r) + "\n" for r in history).encode())


def _finish(run: TrainingRun) -> dict:
    """Rank 0, after the last epoch: the kept weights (``--adv-select``), the run's metrics and its collapse verdict,
    written to ``metrics.json``; returns the metrics."""
    cfg = run.cfg
    selection = _select_robust(run) if cfg.adv_select == "robust" else None
    metrics = run_metrics(run.net, run.data, device=str(run.device))
    if selection is not None:
        metrics["adv_selection"] = selection
    history = read_history(run.out / HISTORY, cfg.epochs)
    metrics["history_tail"] = history[-1:]
    metrics["collapse"] = collapse_verdict(metrics, history, cfg.variant)
    write_json_atomic(run.out / METRICS, metrics)
    return metrics


def _check_selection(cfg: TrainConfig) -> None:
    if cfg.adv_select == "robust" and not (cfg.adv_train and cfg.adv_check > 0):
        raise ValueError(
            "--adv-select robust chooses by the robust validation check: it needs --adv-train and "
            "--adv-check > 0"
        )


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    data: DatasetSplits | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    ctx: DistContext = SINGLE,
) -> RunResult:
    """Train (or resume) one run into ``out``; returns the final model and (on rank 0) its metrics.

    ``stop_after_epoch`` ends the call early as if interrupted (used to test resume). ``ctx``: this process alone
    by default (also inside a torchrun job, e.g. when rank 0 alone trains a missing run); every rank of a job
    passes ``init_distributed(cfg.device)`` to train one run together, as ``python -m training`` does.
    """
    out = Path(out)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    _check_selection(cfg)
    created = ctx.is_main and not out.exists()
    lock, finished = None, False
    try:
        cfg, ckpt, lock = _open_run(cfg, out, resume, ctx)
        data = data or load_run_data(cfg)
        cfg = resolve_config(cfg, data)
        run = _build_run(cfg, ckpt, data, out, ctx)
        start_epoch = 0 if ckpt is None else ckpt["epoch"] + 1
        if ckpt is not None:
            log.info("resuming %s at epoch %d", out, start_epoch)
        if ctx.is_main:
            _record_start(run, start_epoch)
        last_epoch = cfg.epochs - 1 if stop_after_epoch is None else min(stop_after_epoch, cfg.epochs - 1)
        show = progress and ctx.is_main
        saved_at = -math.inf
        for epoch in range(start_epoch, last_epoch + 1):
            row = _train_epoch(run, epoch, show)
            if ctx.is_main:
                due = epoch in (start_epoch, last_epoch) or time.monotonic() - saved_at >= CHECKPOINT_EVERY_S
                _save_epoch(run, row, show, checkpoint=due)
                saved_at = time.monotonic() if due else saved_at
            barrier(ctx)
        metrics = _finish(run) if last_epoch == cfg.epochs - 1 and ctx.is_main else {}
        barrier(ctx)
        finished = True
    finally:
        if lock is not None:
            lock.release()
        if created and not finished:
            remove_unstarted(out)
    run.net.eval()
    return RunResult(out, run.net.cpu(), metrics)
