"""The training loop: read top to bottom. Checkpoints every epoch (atomically), resumes exactly."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.checkpoint import CHECKPOINT, atomic_torch_save, atomic_write_json, load_checkpoint
from training.config import TrainConfig
from training.data import DatasetSplits, load_dataset
from training.loss import GammaSchedule, total_loss
from training.models import Classifier, ModelConfig, build_model

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class RunResult:
    run_dir: Path
    model: Classifier
    metrics: dict


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return torch.as_tensor(np.asarray(images, dtype=np.float32)).div_(255.0)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding), deterministically for a generator."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def gamma_schedule(cfg: TrainConfig, steps_per_epoch: int) -> GammaSchedule:
    if not cfg.penalised:
        return GammaSchedule(0.0, 1.0, 0.0)
    if cfg.gamma_ramp is not None:
        units = cfg.epochs * (steps_per_epoch if cfg.gamma_per == "step" else 1)
        return GammaSchedule.reaching_cap(cfg.gamma0, cfg.gamma_cap, round(cfg.gamma_ramp * units), cfg.gamma_per)
    return GammaSchedule(cfg.gamma0, cfg.gamma_factor, cfg.gamma_cap, cfg.gamma_per)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the backbone learning rate at a 0-based epoch (the output layer's stays constant)."""
    if cfg.lr_schedule == "cosine":
        floor = cfg.lr_min / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    if cfg.lr_schedule == "step":
        if epoch < cfg.lr_step_start:
            return 1.0
        return cfg.lr_step_factor ** ((epoch - cfg.lr_step_start) // cfg.lr_step_every + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; expected cosine, step or constant")


def make_optimizer(model: Classifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    head = list(model.classifier.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.AdamW(
        [
            {"params": body, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "body"},
            {"params": head, "lr": cfg.head_lr, "weight_decay": cfg.head_weight_decay, "name": "head"},
        ]
    )


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1024, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Logits and latents (float32 numpy) for uint8 images."""
    model.eval()
    logits, latents = [], []
    for i in range(0, len(images), batch_size):
        lo, z = model(to_tensor(images[i : i + batch_size]).to(device))
        logits.append(lo.float().cpu().numpy())
        latents.append(z.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(latents)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: str = "cpu") -> dict:
    logits, _ = predict(model, images, device=device)
    lt = torch.from_numpy(logits)
    ce = float(nn.functional.cross_entropy(lt, torch.from_numpy(labels)))
    return {"acc": float((logits.argmax(1) == labels).mean()), "ce": ce}


def model_config_for(cfg: TrainConfig, data: DatasetSplits) -> ModelConfig:
    mean, std = data.channel_stats()
    return ModelConfig(
        backbone=cfg.backbone, variant=cfg.variant, num_classes=data.num_classes, latent_dim=cfg.latent_dim,
        input_shape=data.input_shape, mean=mean, std=std,
    )


def _read_metrics(path: Path, before_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] < before_epoch]


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    data: DatasetSplits | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Train (or resume) one run into ``out``; returns the final model and its metrics.

    ``stop_after_epoch`` ends the call early as if interrupted (used to test resume).
    """
    out = Path(out)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device(cfg.device)
    if resume:
        ckpt = load_checkpoint(out)
        saved = TrainConfig.from_dict(ckpt["train_config"])
        cfg = TrainConfig.from_dict({**saved.to_dict(), "device": cfg.device, "num_threads": cfg.num_threads})
    elif (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    data = data or load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.seed)

    torch.manual_seed(cfg.seed)
    model_cfg = model_config_for(cfg, data)
    model = build_model(model_cfg).to(device)
    opt = make_optimizer(model, cfg)
    start_epoch = 0
    if resume:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"] + 1
        log.info("resuming %s at epoch %d", out, start_epoch)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"train": cfg.to_dict(), "model": model_cfg.to_dict()})

    x_train = to_tensor(data.train.images)
    y_train = torch.from_numpy(data.train.labels)
    n = len(y_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    schedule = gamma_schedule(cfg, steps_per_epoch)
    metrics_path = out / "metrics.jsonl"
    history = _read_metrics(metrics_path, start_epoch)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))

    last_epoch = cfg.epochs - 1 if stop_after_epoch is None else min(stop_after_epoch, cfg.epochs - 1)
    for epoch in range(start_epoch, last_epoch + 1):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, epoch) if group["name"] == "body" else cfg.head_lr
        rng = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=rng)
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, "penalty": 0.0, "correct": 0.0}
        t0 = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = random_shift(x_train[idx], cfg.augment_shift, rng).to(device, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
            gamma = schedule.value(epoch, epoch * steps_per_epoch + i)
            logits, z = model(xb)
            loss, ce, pen = total_loss(logits, z, yb, gamma)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1} (gamma={gamma:.3g}, "
                    f"ce={ce.item():.4g}, penalty={pen.item():.4g}); the last good checkpoint in {out} is kept. "
                    "Try a lower --lr, a slower gamma ramp or a smaller --gamma-cap."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(yb)
            sums["loss"] += loss.item() * b
            sums["ce"] += ce.item() * b
            sums["penalty"] += pen.item() * b
            sums["correct"] += (logits.argmax(1) == yb).sum().item()
            if i % 50 == 0:
                bar.set_postfix(ce=f"{ce.item():.3f}", gamma=f"{gamma:.3g}")
        epoch_time = time.perf_counter() - t0
        val = evaluate(model, data.val.images, data.val.labels, device=str(device))
        row = {
            "epoch": epoch,
            "train_loss": sums["loss"] / n,
            "train_ce": sums["ce"] / n,
            "train_penalty": sums["penalty"] / n,
            "train_acc": sums["correct"] / n,
            "val_acc": val["acc"],
            "val_ce": val["ce"],
            "gamma": schedule.value(epoch, (epoch + 1) * steps_per_epoch - 1),
            "lr": cfg.lr * lr_factor(cfg, epoch),
            "head_lr": cfg.head_lr,
            "epoch_time_s": epoch_time,
        }
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        atomic_torch_save(
            out / CHECKPOINT,
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "train_config": cfg.to_dict(),
                "model_config": model_cfg.to_dict(),
                "classes": data.classes,
                "dataset": data.name,
            },
        )
        tqdm.write(
            f"epoch {epoch + 1}/{cfg.epochs}: ce {row['train_ce']:.4f} val_acc {row['val_acc']:.4f} "
            f"gamma {row['gamma']:.3g} ({epoch_time:.1f}s)"
        ) if progress else None

    metrics: dict = {}
    if last_epoch == cfg.epochs - 1:
        from training.geometry import run_metrics

        metrics = run_metrics(model, data, device=str(device))
        metrics["history_tail"] = _read_metrics(metrics_path, cfg.epochs)[-1:]
        atomic_write_json(out / "metrics.json", metrics)
    model.eval()
    return RunResult(out, model.cpu(), metrics)
