"""Epoch time of bin_enc vs no_pen, measured side by side in one run (the issue's target: ratio <= 1.05).

Part 1 trains each variant for ``--epochs`` full epochs with the real training loop, alternating the variants epoch
by epoch, and prints per-epoch times and the median ratio. On a shared 2-core VM epoch times drift by ±15 % from one
epoch to the next, so part 2 (``--steps``) times single optimisation steps (forward, loss with gamma > 0 for
bin_enc, backward, AdamW step; the same model / loss / optimiser code) alternating the variants step by step, which
cancels that drift, and prints the median ratio and its bootstrap 95 % interval.

    python -m research.scripts.bench_epoch_time --epochs 3 --threads 2 --steps 400
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from training.config import make_config
from training.data import load_dataset
from training.rundir import HISTORY, read_history
from training.train import train


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--backbone", default="cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--steps", type=int, default=400, help="interleaved single steps per variant (0: skip part 2)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    times: dict[str, list[float]] = {"bin_enc": [], "no_pen": []}
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(args.epochs):
            for variant in ("bin_enc", "no_pen") if epoch % 2 == 0 else ("no_pen", "bin_enc"):
                cfg = make_config(
                    "quick",
                    dataset=args.dataset,
                    backbone=args.backbone,
                    variant=variant,
                    epochs=args.epochs,
                    num_threads=args.threads,
                )
                out = Path(tmp) / variant
                # one epoch per call; the final call also computes the geometry metrics, which are not timed
                train(cfg, out, resume=epoch > 0, data=data, stop_after_epoch=epoch, progress=False)
                row = read_history(out / HISTORY)[-1]
                times[variant].append(row["epoch_time_s"])
                print(f"epoch {epoch + 1} {variant:8s} {row['epoch_time_s']:.2f} s")
    if args.epochs:
        ratios = [b / n for b, n in zip(times["bin_enc"], times["no_pen"], strict=True)]
        print(f"threads={args.threads} backbone={args.backbone} dataset={args.dataset}")
        print(f"bin_enc s/epoch: median {statistics.median(times['bin_enc']):.2f}")
        print(f"no_pen  s/epoch: median {statistics.median(times['no_pen']):.2f}")
        print(
            f"ratio bin_enc/no_pen per epoch: {', '.join(f'{r:.3f}' for r in ratios)}; "
            f"median {statistics.median(ratios):.3f}"
        )
    if args.steps:
        step_ratio(data, args)


def step_ratio(data, args) -> None:
    """Part 2: per-step times, variants alternating every step, batch 128 of real training images."""
    import numpy as np

    from training.inference import to_tensor
    from training.loss import total_loss
    from training.models import build_model
    from training.optim import make_optimizer
    from training.train import model_config_for

    x = to_tensor(data.train.images[: 128 * 16])
    y = torch.as_tensor(data.train.labels[: 128 * 16])
    nets = {}
    for variant in ("bin_enc", "no_pen"):
        cfg = make_config("quick", dataset=args.dataset, backbone=args.backbone, variant=variant)
        torch.manual_seed(0)
        model = build_model(model_config_for(cfg, data))
        nets[variant] = (model.train(), make_optimizer(model, cfg), 1.0 if variant == "bin_enc" else 0.0)
    times: dict[str, list[float]] = {"bin_enc": [], "no_pen": []}
    for i in range(args.steps + 20):  # 20 warm-up steps each, not recorded
        b = slice((i % 16) * 128, (i % 16 + 1) * 128)
        for variant in ("bin_enc", "no_pen") if i % 2 == 0 else ("no_pen", "bin_enc"):
            model, opt, gamma = nets[variant]
            t0 = time.perf_counter()
            logits, z = model(x[b])
            loss, _, _ = total_loss(logits, z, y[b], gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 20:
                times[variant].append(time.perf_counter() - t0)
    be, npn = np.array(times["bin_enc"]), np.array(times["no_pen"])
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(be, len(be))) / np.median(rng.choice(npn, len(npn))) for _ in range(1000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(
        f"per step ({args.steps} interleaved steps each, batch 128): bin_enc median {1e3 * np.median(be):.2f} ms, "
        f"no_pen median {1e3 * np.median(npn):.2f} ms; ratio {np.median(be) / np.median(npn):.3f} "
        f"[95% bootstrap {lo:.3f}, {hi:.3f}]"
    )


if __name__ == "__main__":
    main()
