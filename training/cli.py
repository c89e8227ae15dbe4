"""``python -m training``: train one classifier into a run directory (data-parallel under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import PROFILES, TrainConfig, make_config, with_overrides
from training.data import DatasetNotFoundError, available_datasets
from training.distributed import init_distributed, shutdown
from training.models import VARIANTS, available_backbones
from training.rundir import RunLockedError
from training.train import TrainingDiverged, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__, allow_abbrev=False)
    p.add_argument("--config", type=Path, metavar="FILE", help="the settings of FILE, a run's config.json (e.g. "
                   "docs/runs/NAME/config.json: that run trained again); flags given beside it override them")
    p.add_argument("--dataset", choices=available_datasets(), help="(default: fashion-mnist); folder: your own "
                   "images in --data-dir, one sub-folder per class (DIR/<class>/<image>, or DIR/train/<class>/... "
                   "and DIR/test/<class>/...)")
    p.add_argument("--data-dir", help="directory with the dataset files (default for fashion-mnist: "
                   "/usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist)")
    p.add_argument("--image-size", metavar="H[xW]", help="folder: resize every image to H x W pixels (default: the "
                   "size all images have; images of differing sizes need it)")
    p.add_argument("--test-fraction", type=float, help="folder without train/ and test/: share of each class held "
                   "out for test by a fixed-seed stratified split (default 0.2)")
    p.add_argument("--variant", choices=VARIANTS, help="(default: bin_enc)")
    p.add_argument("--backbone", default=None, choices=available_backbones())
    p.add_argument("--profile", choices=sorted(PROFILES), help="(default: quick)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics.jsonl, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--latent-dim", "-d", type=int, dest="latent_dim")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--min-steps", type=int, help="train at least this many optimiser steps: a small dataset gets "
                   "more epochs (quick profile: 3000; 0 = exactly --epochs)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-schedule", choices=["cosine", "step"], help="backbone LR schedule")
    p.add_argument("--lr-min", type=float, help="cosine: final backbone LR")
    p.add_argument("--lr-step-start", type=int, help="step: first epoch of decay")
    p.add_argument("--lr-step-every", type=int, help="step: epochs between decays")
    p.add_argument("--lr-step-factor", type=float, help="step: LR multiplier per decay")
    p.add_argument("--head-lr", type=float, help="constant learning rate of the output layer")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--head-weight-decay", type=float)
    p.add_argument("--gamma0", type=float)
    p.add_argument("--gamma-factor", type=float, help="gamma multiplier per epoch/step (ignored with --gamma-ramp)")
    p.add_argument("--gamma-cap", type=float)
    p.add_argument("--gamma-per", choices=["epoch", "step"])
    p.add_argument("--gamma-ramp", type=float, help="reach --gamma-cap at this fraction of training")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--augment-shift", type=int, help="random shifts of up to N pixels during training (default 0)")
    p.add_argument("--adv-train", choices=["fgsm", "nfgsm", "pgd"], help="adversarial training, L∞ in pixel space: "
                   "FGSM with a random start (Wong et al. 2020, 'fast AT'), N-FGSM (de Jorge et al. 2022: noise "
                   "2·eps, step eps, no projection) or PGD (Madry et al. 2018) (default off)")
    p.add_argument("--adv-eps", type=float, help="L∞ radius of the training adversary (default 0.1)")
    p.add_argument("--adv-steps", type=int, help="PGD steps of the training adversary (default 7)")
    p.add_argument("--adv-check", type=int, metavar="N", help="adversarial training: after every epoch, robust "
                   "accuracy on N validation images under PGD-10 at --adv-eps (default 512; 0 = off)")
    p.add_argument("--adv-select", choices=["last", "robust"], help="adversarial training: keep the last epoch "
                   "(default) or the epoch with the best --adv-check accuracy among those with gamma at its cap "
                   "(early stopping against robust overfitting, Rice, Wong & Kolter 2020)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, dest="num_threads", help="torch CPU threads")
    p.add_argument("--export", action="store_true", help="export model.onnx into the run directory when done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--stop-after-epoch", type=int, metavar="E",
                   help="stop after the 0-based epoch E as if interrupted (continue later with --resume)")
    return p


NOT_SETTINGS = {"config", "profile", "out", "resume", "export", "quiet", "stop_after_epoch"}


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: ``--profile`` (default ``quick``) or ``--config FILE``, then the flags given beside it."""
    overrides = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS and v is not None}
    if args.config is None:
        return make_config(args.profile or "quick", **overrides)
    if args.profile:
        raise ValueError("give --config or --profile, not both (a run's config already holds its profile's settings)")
    try:
        saved = json.loads(args.config.read_text())
    except OSError as err:
        raise ValueError(f"cannot read --config {args.config}: {err.strerror or err}") from None
    except ValueError as err:
        raise ValueError(f"--config {args.config} is not JSON: {err}") from None
    settings = saved.get("train") if isinstance(saved, dict) else None
    if not isinstance(settings, dict) or not {"variant", "dataset", "epochs"} <= set(settings):
        raise ValueError(f"--config {args.config} is not a run's config.json (expected the settings under \"train\")")
    return with_overrides(TrainConfig.from_dict(settings), **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = train_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ctx = init_distributed(cfg.device)
    try:
        result = train(cfg, args.out, resume=args.resume, progress=not args.quiet,
                       stop_after_epoch=args.stop_after_epoch, ctx=ctx)
    except (DatasetNotFoundError, TrainingDiverged, FileExistsError, FileNotFoundError, RunLockedError,
            ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        shutdown(ctx)
        return 2
    collapse = result.metrics.get("collapse") if ctx.is_main else None
    if ctx.is_main and result.metrics:
        print(summary(args.out, result.metrics))
    elif ctx.is_main:
        print(f"stopped: {args.out} (continue with --resume)")
    if collapse:
        print(f"error: {collapse}", file=sys.stderr)
    code = export(args.out) if args.export and ctx.is_main and result.metrics and not collapse else 0
    shutdown(ctx)
    return 1 if collapse else code


def export(out: str) -> int:
    """Export the finished run (``--export``); 0, or 2 with a message when the model cannot be exported."""
    from training.export import export_run
    from training.parity import ParityError
    from training.reliability import GeometryError

    try:
        print(f"exported {export_run(out)}")
    except (GeometryError, DatasetNotFoundError, ParityError, ValueError) as err:
        print(f"error: could not export {out}: {err}", file=sys.stderr)
        return 2
    return 0


def summary(out: str, m: dict) -> str:
    """One line with the finished run's headline figures."""
    line = f"done: {out} test_acc={m.get('test_acc', float('nan')):.4f}"
    if "test" in m and "same_encoding" in m["test"]:
        line += (f" same_encoding={m['test']['same_encoding']:.4f} distinct_codes={m['test']['distinct_class_codes']}"
                 f" bimodal_dims={m['bimodal_dims']}/{m['latent_width']}")
    if "adv_selection" in m:
        sel = m["adv_selection"]
        line += f" kept_epoch={sel['epoch'] + 1} (val_robust_acc={sel['val_robust_acc']:.4f})"
    return line
