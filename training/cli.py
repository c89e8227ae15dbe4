"""``python -m training``: train one classifier into a run directory (data-parallel under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import PROFILES, TrainConfig, choices, make_config, with_overrides
from training.data import DatasetNotFoundError, available_datasets
from training.distributed import init_distributed, shutdown
from training.epoch import TrainingDiverged
from training.models import available_backbones
from training.rundir import HISTORY, METRICS, RunLockedError
from training.train import train

DEFAULT_PROFILE = "quick"  # the profile a run without --profile or --config trains with


def default(option: str) -> object:
    """What a run started without ``--OPTION`` (nor ``--profile`` / ``--config``) trains with."""
    return getattr(make_config(DEFAULT_PROFILE), option)


def _default(option: str) -> str:
    return f"default {default(option)}"


def build_parser() -> argparse.ArgumentParser:
    """The command line; every choice list comes from :data:`training.config.CHOICES` and every default named in a
    help text from the ``quick`` profile and :class:`~training.config.TrainConfig` (a test holds them to it)."""
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__, allow_abbrev=False)
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the settings of FILE, a run's config.json (e.g. "
        "docs/runs/NAME/config.json: that run trained again); flags given beside it override them",
    )
    p.add_argument("--profile", choices=sorted(PROFILES), help=f"(default: {DEFAULT_PROFILE})")
    p.add_argument("--out", required=True, help=f"run directory (checkpoint, {HISTORY}, {METRICS})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _data_options(p)
    _model_options(p)
    _schedule_options(p)
    _adversarial_options(p)
    p.add_argument("--device", default=None, help=f"cpu ({_default('device')}) or cuda")
    p.add_argument("--threads", type=int, dest="num_threads", help="torch CPU threads")
    p.add_argument("--export", action="store_true", help="export model.onnx into the run directory when done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="E",
        help="stop after the 0-based epoch E as if interrupted (continue later with --resume)",
    )
    return p


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=available_datasets(),
        help=f"({_default('dataset')}); folder: your own "
        "images in --data-dir, one sub-folder per class (DIR/<class>/<image>, or DIR/train/<class>/... "
        "and DIR/test/<class>/...)",
    )
    p.add_argument(
        "--data-dir",
        help="directory with the dataset files (default for fashion-mnist: "
        "/usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist)",
    )
    p.add_argument(
        "--image-size",
        metavar="H[xW]",
        help="folder: resize every image to H x W pixels (default: the "
        "size all images have; images of differing sizes need it)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        help="folder without train/ and test/: share of each class held "
        f"out for test by a fixed-seed stratified split ({_default('test_fraction')})",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help=f"share of the training split held out for validation ({_default('val_fraction')})",
    )
    p.add_argument(
        "--augment-shift",
        type=int,
        help=f"random shifts of up to N pixels during training ({_default('augment_shift')})",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", choices=choices("variant"), help=f"({_default('variant')})")
    p.add_argument(
        "--backbone", default=None, choices=available_backbones(), help=f"({_default('backbone')})"
    )
    p.add_argument(
        "--latent-dim",
        "-d",
        type=int,
        dest="latent_dim",
        help="latent width (default: 8 for 10 classes, training.models.default_latent_dim)",
    )
    p.add_argument("--seed", type=int, help=f"({_default('seed')})")


def _schedule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help=f"({_default('epochs')})")
    p.add_argument(
        "--min-steps",
        type=int,
        help="train at least this many optimiser steps: a small dataset gets "
        f"more epochs ({_default('min_steps')}; 0 = exactly --epochs)",
    )
    p.add_argument("--batch-size", type=int, help=f"({_default('batch_size')})")
    p.add_argument("--lr", type=float, help=f"backbone learning rate ({_default('lr')})")
    schedules = choices("lr_schedule")
    p.add_argument(
        "--lr-schedule",
        choices=schedules,
        help=f"backbone LR schedule: {', '.join(schedules)} ({_default('lr_schedule')})",
    )
    p.add_argument("--lr-min", type=float, help=f"cosine: final backbone LR ({_default('lr_min')})")
    p.add_argument(
        "--lr-step-start", type=int, help=f"step: first epoch of decay ({_default('lr_step_start')})"
    )
    p.add_argument(
        "--lr-step-every", type=int, help=f"step: epochs between decays ({_default('lr_step_every')})"
    )
    p.add_argument(
        "--lr-step-factor", type=float, help=f"step: LR multiplier per decay ({_default('lr_step_factor')})"
    )
    p.add_argument(
        "--head-lr", type=float, help=f"constant learning rate of the output layer ({_default('head_lr')})"
    )
    p.add_argument("--weight-decay", type=float, help=f"({_default('weight_decay')})")
    p.add_argument("--head-weight-decay", type=float, help=f"({_default('head_weight_decay')})")
    p.add_argument(
        "--gamma0", type=float, help=f"initial weight of the compression loss ({_default('gamma0')})"
    )
    p.add_argument(
        "--gamma-factor",
        type=float,
        help=f"gamma multiplier per epoch/step (ignored with --gamma-ramp; {_default('gamma_factor')})",
    )
    p.add_argument("--gamma-cap", type=float, help=f"({_default('gamma_cap')})")
    p.add_argument("--gamma-per", choices=choices("gamma_per"), help=f"({_default('gamma_per')})")
    p.add_argument(
        "--gamma-ramp",
        type=float,
        help=f"reach --gamma-cap at this fraction of training ({_default('gamma_ramp')})",
    )


def _adversarial_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--adv-train",
        choices=choices("adv_train"),
        help="adversarial training, L∞ in pixel space: "
        "FGSM with a random start (Wong et al. 2020, 'fast AT'), N-FGSM (de Jorge et al. 2022: noise "
        "2·eps, step eps, no projection) or PGD (Madry et al. 2018) (default off)",
    )
    p.add_argument(
        "--adv-eps", type=float, help=f"L∞ radius of the training adversary ({_default('adv_eps')})"
    )
    p.add_argument(
        "--adv-steps", type=int, help=f"PGD steps of the training adversary ({_default('adv_steps')})"
    )
    p.add_argument(
        "--adv-check",
        type=int,
        metavar="N",
        help="adversarial training: after every epoch, robust "
        f"accuracy on N validation images under PGD-10 at --adv-eps ({_default('adv_check')}; 0 = off)",
    )
    p.add_argument(
        "--adv-select",
        choices=choices("adv_select"),
        help="adversarial training: keep the last epoch "
        "(last) or the epoch with the best --adv-check accuracy among those with gamma at its cap "
        f"(robust: early stopping against robust overfitting, Rice, Wong & Kolter 2020) "
        f"({_default('adv_select')})",
    )


NOT_SETTINGS = {"config", "profile", "out", "resume", "export", "quiet", "stop_after_epoch"}


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: ``--profile`` (default ``quick``) or ``--config FILE``, then the flags given beside it.

    >>> args = build_parser().parse_args(["--out", "runs/x", "--profile", "long", "--seed", "2"])
    >>> cfg = train_config(args)
    >>> cfg.profile, cfg.seed, cfg.epochs, cfg.gamma_cap
    ('long', 2, 60, 10000.0)
    >>> again = build_parser().parse_args(["--out", "runs/y", "--epochs", "5",
    ...                                    "--config", "docs/runs/fashion-mnist_cnn_quick_bin_enc_s1/config.json"])
    >>> cfg = train_config(again)  # the recorded run's settings, with --epochs 5 trained exactly
    >>> cfg.seed, cfg.epochs, cfg.min_steps, cfg.variant
    (1, 5, 0, 'bin_enc')
    """
    overrides = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS and v is not None}
    if args.config is None:
        return make_config(args.profile or DEFAULT_PROFILE, **overrides)
    if args.profile:
        raise ValueError(
            "give --config or --profile, not both (a run's config already holds its profile's settings)"
        )
    try:
        saved = json.loads(args.config.read_text())
    except OSError as err:
        raise ValueError(f"cannot read --config {args.config}: {err.strerror or err}") from None
    except ValueError as err:
        raise ValueError(f"--config {args.config} is not JSON: {err}") from None
    settings = saved.get("train") if isinstance(saved, dict) else None
    if not isinstance(settings, dict) or not {"variant", "dataset", "epochs"} <= set(settings):
        raise ValueError(
            f'--config {args.config} is not a run\'s config.json (expected the settings under "train")'
        )
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
        result = train(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.quiet,
            stop_after_epoch=args.stop_after_epoch,
            ctx=ctx,
        )
    except (
        DatasetNotFoundError,
        TrainingDiverged,
        FileExistsError,
        FileNotFoundError,
        RunLockedError,
        ValueError,
    ) as err:
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
        line += (
            f" same_encoding={m['test']['same_encoding']:.4f} distinct_codes={m['test']['distinct_class_codes']}"
            f" bimodal_dims={m['bimodal_dims']}/{m['latent_width']}"
        )
    if "adv_selection" in m:
        sel = m["adv_selection"]
        line += f" kept_epoch={sel['epoch'] + 1} (val_robust_acc={sel['val_robust_acc']:.4f})"
    return line
