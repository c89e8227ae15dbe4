"""The training loop. Checkpoints every epoch (atomically) and resumes exactly, in one process or data-parallel.

Under ``torchrun`` every process runs :func:`train`; each global batch (``TrainConfig.batch_size``) is drawn in the
single-process order and split into contiguous per-rank shards, and the loss of a shard is weighted by its share of
the global batch, so the optimiser steps are those of one process up to floating-point reduction order. Rank 0 alone
writes the run directory. See ``docs/distributed.md``.

Here: the run's set-up (writer lock, resume, model and optimiser) and the loop over epochs; one epoch is
:mod:`training.epoch`, what rank 0 writes into the run directory :mod:`training.run_records`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from training.checkpoint import CHECKPOINT, load_checkpoint
from training.config import TrainConfig
from training.data import DatasetSplits, load_run_data
from training.distributed import SINGLE, DistContext, barrier, broadcast_object, local_device
from training.epoch import TrainingRun, train_epoch
from training.inference import to_tensor
from training.models import Classifier, ModelConfig, build_model, default_latent_dim
from training.optim import gamma_schedule, make_optimizer, resolve_schedule, steps_per_epoch
from training.run_records import finish_run, record_start, save_epoch
from training.rundir import RunLock, RunLockedError, remove_unstarted

__all__ = ["RunResult", "model_config_for", "train"]

log = logging.getLogger(__name__)

# Short epochs (a small dataset trained for many epochs) rewrite the checkpoint at most this often; the first and last
# epochs are always saved, and a resume continues from the last saved epoch as exactly as from any other.
CHECKPOINT_EVERY_S = 10.0


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
            record_start(run, start_epoch)
        last_epoch = cfg.epochs - 1 if stop_after_epoch is None else min(stop_after_epoch, cfg.epochs - 1)
        show = progress and ctx.is_main
        saved_at = -math.inf
        for epoch in range(start_epoch, last_epoch + 1):
            row = train_epoch(run, epoch, show)
            if ctx.is_main:
                due = epoch in (start_epoch, last_epoch) or time.monotonic() - saved_at >= CHECKPOINT_EVERY_S
                save_epoch(run, row, show, checkpoint=due)
                saved_at = time.monotonic() if due else saved_at
            barrier(ctx)
        metrics = finish_run(run) if last_epoch == cfg.epochs - 1 and ctx.is_main else {}
        barrier(ctx)
        finished = True
    finally:
        if lock is not None:
            lock.release()
        if created and not finished:
            remove_unstarted(out)
    run.net.eval()
    return RunResult(out, run.net.cpu(), metrics)
