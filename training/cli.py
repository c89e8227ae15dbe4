"""``python -m training``: train one classifier into a run directory."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from training.config import PROFILES, make_config
from training.data import DatasetNotFoundError, available_datasets
from training.models import VARIANTS, available_backbones


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist", choices=available_datasets())
    p.add_argument("--data-dir", help="directory with the dataset files (default for fashion-mnist: "
                   "/usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist)")
    p.add_argument("--variant", default="bin_enc", choices=VARIANTS)
    p.add_argument("--backbone", default=None, choices=available_backbones())
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics.jsonl, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--latent-dim", "-d", type=int, dest="latent_dim")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
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
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, dest="num_threads", help="torch CPU threads")
    p.add_argument("--export", action="store_true", help="export model.onnx into the run directory when done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {k: v for k, v in vars(args).items()
                 if k not in {"profile", "out", "resume", "export", "quiet"}}
    cfg = make_config(args.profile, **overrides)
    from training.train import TrainingDiverged, train

    try:
        result = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except (DatasetNotFoundError, TrainingDiverged, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = result.metrics
    summary = f"done: {args.out} test_acc={m.get('test_acc', float('nan')):.4f}"
    if "test" in m and "same_encoding" in m["test"]:
        summary += (f" same_encoding={m['test']['same_encoding']:.4f} distinct_codes={m['test']['distinct_class_codes']}"
                    f" bimodal_dims={m['bimodal_dims']}/{m['latent_width']}")
    print(summary)
    if args.export:
        from training.export import export_run

        path = export_run(args.out)
        print(f"exported {path}")
    return 0
