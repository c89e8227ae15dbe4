"""What rank 0 writes into a run directory while it trains: ``config.json`` and the cut history at the start, each
epoch's row (and checkpoint), the best robust epoch's weights (``--adv-select robust``), ``metrics.json`` at the end."""

from __future__ import annotations

import json
import time

import torch
from tqdm.auto import tqdm

from serving.atomic_write import atomic_write_bytes
from training.adversary import robust_accuracy
from training.checkpoint import CHECKPOINT, atomic_torch_save, load_checkpoint
from training.collapse import collapse_verdict
from training.epoch import TrainingRun
from training.inference import evaluate
from training.jsonio import write_json_atomic
from training.optim import full_gamma_epoch, lr_factor
from training.run_metrics import run_metrics
from training.rundir import CONFIG, HISTORY, METRICS, append_row, read_history
from training.version import code_version

ROBUST_BEST = "robust_best.pt"  # --adv-select robust: the weights of the best checked epoch so far


def save_epoch(run: TrainingRun, train_row: dict, progress: bool, checkpoint: bool = True) -> None:
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


def record_start(run: TrainingRun, start_epoch: int) -> None:
    """Rank 0: write ``config.json`` (the settings the run trains with) and cut ``metrics.jsonl`` back to the epochs
    before ``start_epoch`` (a resumed run rewrites the rows of epochs it trains again)."""
    recorded = {"train": run.cfg.to_dict(), "model": run.model_cfg.to_dict(), "code_version": code_version()}
    if run.data.source is not None:
        recorded["data"] = run.data.source
    write_json_atomic(run.out / CONFIG, recorded)
    history = read_history(run.out / HISTORY, start_epoch)
    atomic_write_bytes(run.out / HISTORY, "".join(json.dumps(r) + "\n" for r in history).encode())


def finish_run(run: TrainingRun) -> dict:
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
