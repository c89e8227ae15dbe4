"""Mean ± std over seeds of the quick-profile runs -> a markdown table (docs/results.md is made with it).

    python scripts/results_table.py --runs runs --seeds 0 1 2 > table.md

Reads each run's metrics.json; the share of *correctly classified* test samples on their class's code
(``same_encoding_correct``) is recomputed from the checkpoint when an older metrics.json lacks it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from training.geometry import DimensionPeaks, latent_geometry

VARIANTS = ("bin_enc", "no_pen", "lin_pen", "nonlin_pen")

def test_geometry(run: Path, metrics: dict) -> dict:
    g = metrics.get("test", {})
    if "same_encoding" not in g or "same_encoding_correct" in g:
        return g
    from training.checkpoint import load_run
    from training.data import load_dataset
    from training.train import predict

    model, cfg, _ = load_run(run)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.seed)
    logits, z = predict(model, data.test.images)
    peaks = [DimensionPeaks(d["low"], d["high"], 1.0, 1.0, d["weight_low"]) for d in metrics["dimensions"]]
    return latent_geometry(z, logits.argmax(1), data.test.labels, data.num_classes, peaks)

def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="runs")
    p.add_argument("--prefix", default="fashion-mnist_cnn_quick")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    print("| variant | seeds | test acc | same-encoding (test, all) | same-encoding (test, correct) "
          "| same-encoding (train) | distinct codes (test) | bimodal dims | NC1 (test) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in VARIANTS:
        rows = []
        for s in args.seeds:
            run = Path(args.runs) / f"{args.prefix}_{v}_s{s}"
            if (run / "metrics.json").is_file():
                m = json.loads((run / "metrics.json").read_text())
                rows.append((m, test_geometry(run, m)))
        if not rows:
            continue
        acc = [m["test_acc"] for m, _ in rows]
        if v == "no_pen":
            print(f"| {v} | {len(rows)} | {fmt(acc, 4)} | – | – | – | – | – | {fmt([g['nc1'] for _, g in rows])} |")
            continue
        codes = sorted({g["distinct_class_codes"] for _, g in rows})
        bim = sorted({f"{m['bimodal_dims']}/{m['latent_width']}" for m, _ in rows})
        print(f"| {v} | {len(rows)} | {fmt(acc, 4)} | {fmt([g['same_encoding'] for _, g in rows])} "
              f"| {fmt([g['same_encoding_correct'] for _, g in rows])} "
              f"| {fmt([m['train']['same_encoding'] for m, _ in rows])} | {', '.join(map(str, codes))} "
              f"| {', '.join(bim)} | {fmt([g['nc1'] for _, g in rows])} |")

if __name__ == "__main__":
    main()
