"""Epoch time of bin_enc vs no_pen, measured side by side in one run (the issue's target: ratio <= 1.05).

Trains each variant for ``--epochs`` full epochs with the real training loop, alternating the variants epoch by
epoch (so background load hits both alike), and prints per-epoch times and the median ratio.

    python scripts/bench_epoch_time.py --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from training.config import make_config
from training.data import load_dataset
from training.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--backbone", default="cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    times: dict[str, list[float]] = {"bin_enc": [], "no_pen": []}
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(args.epochs):
            for variant in (("bin_enc", "no_pen") if epoch % 2 == 0 else ("no_pen", "bin_enc")):
                cfg = make_config("quick", dataset=args.dataset, backbone=args.backbone, variant=variant,
                                  epochs=args.epochs, num_threads=args.threads)
                out = Path(tmp) / variant
                # one epoch per call; the final call also computes the geometry metrics, which are not timed
                train(cfg, out, resume=epoch > 0, data=data, stop_after_epoch=epoch, progress=False)
                row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
                times[variant].append(row["epoch_time_s"])
                print(f"epoch {epoch + 1} {variant:8s} {row['epoch_time_s']:.2f} s")
    ratios = [b / n for b, n in zip(times["bin_enc"], times["no_pen"], strict=True)]
    print(f"threads={args.threads} backbone={args.backbone} dataset={args.dataset}")
    print(f"bin_enc s/epoch: median {statistics.median(times['bin_enc']):.2f}")
    print(f"no_pen  s/epoch: median {statistics.median(times['no_pen']):.2f}")
    print(f"ratio bin_enc/no_pen per epoch: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
