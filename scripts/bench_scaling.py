"""Epoch time of data-parallel training, or wall time of the bench, at 1 and 2 processes, measured side by side in
one run (ratio printed).

    python scripts/bench_scaling.py --dataset fashion-mnist --backbone cnn --steps 40 --epochs 3 --rounds 2
    python scripts/bench_scaling.py --rounds 1 --bench="--variants bin_enc,no_pen --n-samples 60 --quiet"

With ``--bench ARGS`` each configuration is a ``torchrun`` launch of ``python -m robustness.bench ARGS`` (models dealt
out to the processes) and its time is the bench's ``seconds_total`` (start-up of the interpreters excluded).

Each configuration (``--configs``, processes x threads per process: by default 1x2 and 2x1, the two ways to use 2
cores; 1x1 for reference) is a real ``torchrun`` launch of the training loop (``training.train.train``) on the first ``--steps`` global batches of
the training split (global batch ``--batch-size``), for ``--epochs`` epochs; the configurations take turns for
``--rounds`` rounds so that background load affects them alike. An epoch's time is the training loop's
``epoch_time_s`` (no validation, no start-up); the first epoch of each launch is warm-up and not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}  # name: (processes, threads per process)


def worker(args: argparse.Namespace) -> None:
    """One training launch (every rank runs this); rank 0 prints the epoch times as JSON."""
    import torch

    from training.config import make_config
    from training.data import DatasetSplits, Split, load_dataset
    from training.distributed import init_distributed, shutdown
    from training.train import train

    ctx = init_distributed("cpu")
    torch.set_num_threads(args.threads)
    full = load_dataset(args.dataset, args.data_dir)
    n = args.steps * args.batch_size
    data = DatasetSplits(
        full.name,
        full.classes,
        Split(full.train.images[:n], full.train.labels[:n]),
        Split(full.val.images[:256], full.val.labels[:256]),
        full.test,
    )
    cfg = make_config(
        "quick",
        dataset=args.dataset,
        backbone=args.backbone,
        batch_size=args.batch_size,
        epochs=args.epochs + 1,
        num_threads=args.threads,
    )
    train(cfg, args.out, data=data, stop_after_epoch=args.epochs - 1, progress=False, ctx=ctx)
    if ctx.is_main:
        rows = [json.loads(r) for r in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
        print("EPOCH_TIMES " + json.dumps([r["epoch_time_s"] for r in rows]), flush=True)
    shutdown(ctx)


def torchrun(name: str, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` with configuration ``name``'s processes and threads; fails loudly."""
    procs, threads = CONFIGS[name]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cmd],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


def launch(name: str, args: argparse.Namespace, out: Path) -> list[float]:
    threads = CONFIGS[name][1]
    cmd = [
        __file__,
        "--worker",
        "--threads",
        str(threads),
        "--out",
        str(out),
        "--dataset",
        args.dataset,
        "--backbone",
        args.backbone,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        str(args.epochs),
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = torchrun(name, *cmd)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("EPOCH_TIMES ")]
    if not lines:
        raise RuntimeError(f"{name} printed no epoch times: {done.stdout[-3000:]}")
    return json.loads(lines[0].split(" ", 1)[1])[1:]


def launch_bench(name: str, args: argparse.Namespace, out: Path) -> list[float]:
    from robustness.results import load_results

    torchrun(
        name,
        "-m",
        "robustness.bench",
        *args.bench.split(),
        "--threads",
        str(CONFIGS[name][1]),
        "--out",
        str(out),
        cwd=REPO,
    )
    return [load_results(out / "results.json")["seconds_total"]]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--backbone", default="cnn")
    p.add_argument("--steps", type=int, default=40, help="global batches per epoch")
    p.add_argument("--batch-size", type=int, default=128, help="global batch")
    p.add_argument("--epochs", type=int, default=3, help="epochs per launch (the first is warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["1x2", "2x1"], choices=sorted(CONFIGS))
    p.add_argument(
        "--bench", metavar="ARGS", help="time `python -m robustness.bench ARGS` instead of training"
    )
    p.add_argument(
        "--keep", metavar="DIR", help="with --bench: keep each launch's report in DIR/CONFIG_ROUND"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    times: dict[str, list[float]] = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        for r in range(args.rounds):
            for name in args.configs if r % 2 == 0 else list(reversed(args.configs)):
                run = launch_bench if args.bench else launch
                got = run(name, args, base / f"{name}_{r}")
                times[name] += got
                unit = "s" if args.bench else "s/epoch"
                print(f"round {r + 1} {name}: " + ", ".join(f"{t:.2f}" for t in got) + f" {unit}", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    if args.bench:
        print(
            f"python -m robustness.bench {args.bench}, {os.cpu_count()} CPU cores; median wall s "
            "(processes x threads):"
        )
    else:
        print(
            f"{args.dataset} {args.backbone}, {args.steps} steps of global batch {args.batch_size} per epoch, "
            f"{os.cpu_count()} CPU cores; median s/epoch (processes x threads):"
        )
    for name, value in med.items():
        print(
            f"  {name}: {value:.2f}"
            + ("" if args.bench else f"  ({args.steps * args.batch_size / value:.0f} images/s)")
        )
    for name in med:
        if name != "2x1" and "2x1" in med:
            print(f"ratio {name} / 2x1 = {med[name] / med['2x1']:.3f} (> 1: two processes faster)")


if __name__ == "__main__":
    main()
