"""Sweep of compressed gamma/LR schedules for the `quick` profile (how research/quick-profile.md was made).

Runs each configuration as its own `python -m training` process (in parallel, one thread each), then prints a
table of test accuracy and latent geometry. Every configuration starts from the sweep's own base (the profile
as it stood before the sweep: gamma cap 1e3 reached at 70 % of training, output-layer LR 1e-3), not from today's
`quick` defaults, so the table in research/quick-profile.md regenerates whatever `quick` becomes. Usage:

    python -m research.scripts.quick_profile_sweep --round 1 --device cuda --jobs 16 --out sweep_runs
    python -m research.scripts.quick_profile_sweep --round 2 --device cuda --jobs 16 --out sweep_runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from training.rundir import METRICS

BASE = [
    "--dataset",
    "fashion-mnist",
    "--backbone",
    "cnn",
    "--profile",
    "quick",
    "--quiet",
    "--threads",
    "1",
    "--gamma-cap",
    "1e3",
    "--gamma-ramp",
    "0.7",
    "--head-lr",
    "1e-3",
]
CONFIGS: dict[str, list[str]] = {
    "q_default": [],
    "hlr1e-2_cap1e3": ["--head-lr", "1e-2"],
    "hlr1e-2_cap1e4": ["--head-lr", "1e-2", "--gamma-cap", "1e4"],
    "hlr1e-2_cap1e5": ["--head-lr", "1e-2", "--gamma-cap", "1e5"],
    "hlr3e-2_cap1e4": ["--head-lr", "3e-2", "--gamma-cap", "1e4"],
    "hlr1e-2_cap1e4_r.5": ["--head-lr", "1e-2", "--gamma-cap", "1e4", "--gamma-ramp", "0.5"],
    "hlr1e-2_cap1e4_d16": ["--head-lr", "1e-2", "--gamma-cap", "1e4", "-d", "16"],
    "hlr1e-2_cap1e4_hwd0": ["--head-lr", "1e-2", "--gamma-cap", "1e4", "--head-weight-decay", "0"],
    "hlr1e-2_cap1e4_wd0": [
        "--head-lr",
        "1e-2",
        "--gamma-cap",
        "1e4",
        "--weight-decay",
        "0",
        "--head-weight-decay",
        "0",
    ],
    "hlr1e-3_cap1e2": ["--gamma-cap", "1e2"],
    "hlr1e-2_cap1e4_e30": ["--head-lr", "1e-2", "--gamma-cap", "1e4", "--epochs", "30"],
    "hlr3e-2_cap1e5_r.5": ["--head-lr", "3e-2", "--gamma-cap", "1e5", "--gamma-ramp", "0.5"],
    "hlr1e-2_cap1e4_epoch": ["--head-lr", "1e-2", "--gamma-cap", "1e4", "--gamma-per", "epoch"],
    "hlr1e-1_cap1e6": ["--head-lr", "1e-1", "--gamma-cap", "1e6"],
    "no_pen": ["--variant", "no_pen"],
    "lin_pen": ["--variant", "lin_pen"],
}


# Round 2: after round 1 showed lower caps and longer plateaus binarise more.
CONFIGS_R2: dict[str, list[str]] = {
    "cap1e2_r.5": ["--gamma-cap", "1e2", "--gamma-ramp", "0.5"],
    "cap3e1": ["--gamma-cap", "30"],
    "cap1e1": ["--gamma-cap", "10"],
    "cap3e2": ["--gamma-cap", "300"],
    "cap1e2_hlr3e-4": ["--gamma-cap", "1e2", "--head-lr", "3e-4"],
    "cap1e2_e30": ["--gamma-cap", "1e2", "--epochs", "30"],
    "cap1e2_r.3": ["--gamma-cap", "1e2", "--gamma-ramp", "0.3"],
    "cap1e2_hlr3e-3": ["--gamma-cap", "1e2", "--head-lr", "3e-3"],
    "cap1e2_d16": ["--gamma-cap", "1e2", "-d", "16"],
    "cap1e2_epoch": ["--gamma-cap", "1e2", "--gamma-per", "epoch"],
    "cap1e2_b64": ["--gamma-cap", "1e2", "--batch-size", "64"],
    "cap1e2_lr2e-3": ["--gamma-cap", "1e2", "--lr", "2e-3"],
    "cap3e1_e30": ["--gamma-cap", "30", "--epochs", "30"],
    "cap1e2_e30_r.5": ["--gamma-cap", "1e2", "--epochs", "30", "--gamma-ramp", "0.5"],
    "cap1e2_d10": ["--gamma-cap", "1e2", "-d", "10"],
    "cap1e2_seed1": ["--gamma-cap", "1e2", "--seed", "1"],
}
ROUNDS = {1: CONFIGS, 2: CONFIGS_R2}


def summarise(run: Path) -> dict:
    row: dict = {"run": run.name}
    hist = run / "metrics.jsonl"
    if hist.is_file():
        rows = [json.loads(x) for x in hist.read_text().splitlines() if x.strip()]
        if rows:
            row.update(
                epochs_done=len(rows),
                train_ce=rows[-1]["train_ce"],
                val_acc=rows[-1]["val_acc"],
                s_per_epoch=sum(r["epoch_time_s"] for r in rows) / len(rows),
            )
    m = run / METRICS
    if m.is_file():
        mm = json.loads(m.read_text())
        row["test_acc"] = mm["test_acc"]
        if "test" in mm and "same_encoding" in mm["test"]:
            row.update(
                same_enc=mm["test"]["same_encoding"],
                same_enc_raw=mm["test"]["same_encoding_raw_sign"],
                codes=mm["test"]["distinct_class_codes"],
                bimodal=f"{mm['bimodal_dims']}/{mm['latent_width']}",
                min_sep=min(d["separation"] for d in mm["dimensions"]),
            )
    return row


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--data-dir", help="Fashion-MNIST IDX directory (default: the Debian package's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="sweep_runs")
    p.add_argument(
        "--deadline", type=float, default=1e9, help="seconds; unfinished runs are reported as they stand"
    )
    p.add_argument("--only", nargs="*")
    p.add_argument("--seed", default="0")
    p.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS))
    args = p.parse_args()
    out = Path(args.out)
    configs = ROUNDS[args.round]
    todo = [(n, a) for n, a in configs.items() if not args.only or n in args.only]
    running: list[subprocess.Popen] = []
    t0 = time.time()
    while todo or running:
        running = [r for r in running if r.poll() is None]
        while todo and len(running) < args.jobs:
            name, extra = todo.pop(0)
            data_dir = ["--data-dir", args.data_dir] if args.data_dir else []
            cmd = [
                sys.executable,
                "-m",
                "training",
                *BASE,
                *data_dir,
                "--device",
                args.device,
                "--seed",
                args.seed,
                "--out",
                str(out / name),
                *extra,
            ]
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / f"{name}.log", "w")
            running.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        if time.time() - t0 > args.deadline:
            for r in running:
                r.kill()
            break
        time.sleep(2)
    print(f"wall {time.time() - t0:.0f}s")
    for name in configs:
        if (out / name).is_dir():
            print(json.dumps(summarise(out / name)))


if __name__ == "__main__":
    main()
