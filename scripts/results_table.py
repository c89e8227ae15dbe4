"""Mean ± std over seeds of the quick-profile runs -> the markdown table of docs/results.md.

    python scripts/results_table.py --runs docs/runs --seeds 0

Reads each run's ``metrics.json`` (``docs/runs/`` keeps a copy of every run docs/ cites, ``research/runs/`` of the studies' runs; ``runs/`` works too).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from training.rundir import METRICS

VARIANTS = ("bin_enc", "no_pen", "lin_pen", "nonlin_pen")


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    p.add_argument("--runs", default="docs/runs")
    p.add_argument("--prefix", default="fashion-mnist_cnn_quick")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    print(
        "| variant | seeds | test acc | same-encoding (test, all) | same-encoding (test, correct) "
        "| same-encoding (train) | distinct codes (test) | bimodal dims | NC1 (test) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for v in VARIANTS:
        rows = []
        for s in args.seeds:
            run = Path(args.runs) / f"{args.prefix}_{v}_s{s}"
            if (run / METRICS).is_file():
                m = json.loads((run / METRICS).read_text())
                rows.append((m, m["test"]))
        if not rows:
            continue
        acc = [m["test_acc"] for m, _ in rows]
        if v == "no_pen":
            print(
                f"| {v} | {len(rows)} | {fmt(acc, 4)} | – | – | – | – | – | {fmt([g['nc1'] for _, g in rows])} |"
            )
            continue
        codes = sorted({g["distinct_class_codes"] for _, g in rows})
        bim = sorted({f"{m['bimodal_dims']}/{m['latent_width']}" for m, _ in rows})
        print(
            f"| {v} | {len(rows)} | {fmt(acc, 4)} | {fmt([g['same_encoding'] for _, g in rows])} "
            f"| {fmt([g['same_encoding_correct'] for _, g in rows])} "
            f"| {fmt([m['train']['same_encoding'] for m, _ in rows])} | {', '.join(map(str, codes))} "
            f"| {', '.join(bim)} | {fmt([g['nc1'] for _, g in rows])} |"
        )


if __name__ == "__main__":
    main()
