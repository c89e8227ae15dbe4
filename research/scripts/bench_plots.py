"""Redraw a committed bench's plots from its ``results.json`` (the bench folders under research/bench/ keep only
``results.json`` and ``report.md``; their PNGs are not committed).

    python -m research.scripts.bench_plots research/bench/*/results.json

Writes, next to each ``results.json``, every plot its ``report.md`` links that the results alone determine (worst-case
robust accuracy, risk-coverage, and per model robust accuracy and OOD ROC curves), drawn by the bench's own
:func:`robustness.report.write_report`. The reliability and latent histograms need the models' arrays: rerun the
bench command at the top of that ``report.md``. Needs the ``bench`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from robustness.report import write_report
from robustness.results import load_results


def redraw(results_json: Path, out: Path | None = None) -> list[Path]:
    """Write the plots of ``results_json`` into ``out`` (default: its folder); returns their paths."""
    out = results_json.parent if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(results_json)
    with (
        tempfile.TemporaryDirectory() as tmp
    ):  # write_report also rewrites results.json and report.md: not here
        written = write_report(results, {}, tmp)
        return [Path(shutil.move(p, out / p.name)) for p in written.values() if p.suffix == ".png"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m research.scripts.bench_plots",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    p.add_argument("results", nargs="+", type=Path, help="a bench's results.json")
    p.add_argument(
        "--out", type=Path, help="write into OUT/<bench folder name>/ instead of beside each results.json"
    )
    args = p.parse_args(argv)
    for path in args.results:
        try:
            plots = redraw(path, None if args.out is None else args.out / path.parent.name)
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        print(f"{path}: {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
