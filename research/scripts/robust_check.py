"""The per-epoch robust validation check of adversarially trained runs, as a table and a plot.

    python -m research.scripts.robust_check RUN [RUN ...] [--out PLOT.png]

RUN: a run directory or its copy under research/runs/ (``config.json`` and ``metrics.jsonl``; ``metrics.json`` for the
epoch ``--adv-select robust`` kept). Prints, per epoch, gamma, clean validation accuracy and ``val_robust_acc``
(PGD-10 at the training ε on the first ``--adv-check`` validation images, ``training.adversary.robust_accuracy``);
the plot draws both accuracies per run, with the first epoch at full gamma (where the selection window starts) and
the kept epoch marked. Runs trained before the check existed have no ``val_robust_acc`` and are refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from research.scripts.regimes import regime_name
from robustness.report_plots import pyplot
from training.rundir import CONFIG, HISTORY, read_history, read_metrics


def load(run: Path) -> dict:
    """The run's label, regime, per-epoch rows and, when selected, the kept epoch and the window's start."""
    train = json.loads((run / CONFIG).read_text())["train"]
    rows = read_history(run / HISTORY)
    if not rows or any("val_robust_acc" not in r for r in rows):
        raise SystemExit(
            f"{run}: no val_robust_acc in metrics.jsonl (train with --adv-train and --adv-check > 0)"
        )
    metrics = read_metrics(run)
    sel = metrics.get("adv_selection") or {}
    return {
        "label": f"{train['variant']} s{train['seed']}",
        "regime": regime_name(train),
        "rows": rows,
        "kept": sel.get("epoch"),
        "from_epoch": sel.get("from_epoch"),
    }


def table(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        kept = r["kept"] + 1 if r["kept"] is not None else "last"
        lines += [
            f"{r['label']} ({r['regime']}); kept epoch: {kept}",
            "| epoch (1-based) | gamma | val acc | val robust acc (PGD-10) | check s |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['epoch'] + 1} | {x['gamma']:.3g} | {x['val_acc']:.4f} | {x['val_robust_acc']:.4f} | "
            f"{x.get('check_time_s', float('nan')):.1f} |"
            for x in r["rows"]
        ]
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, r in enumerate(runs):
        color = f"C{i}"
        epochs = [x["epoch"] + 1 for x in r["rows"]]
        ax.plot(
            epochs,
            [x["val_robust_acc"] for x in r["rows"]],
            "-o",
            ms=3,
            color=color,
            label=f"{r['label']}, {r['regime']}: robust (PGD-10)",
        )
        ax.plot(
            epochs, [x["val_acc"] for x in r["rows"]], ":", color=color, lw=1, label=f"{r['label']}: clean"
        )
        if r["kept"] is not None:
            ax.plot([r["kept"] + 1], [r["rows"][r["kept"]]["val_robust_acc"]], "*", ms=12, color=color)
        if r["from_epoch"] is not None:
            ax.axvline(r["from_epoch"] + 1, color=color, ls="--", lw=0.8, alpha=0.6)
    gammas = [(r, [x["gamma"] for x in r["rows"]]) for r in runs]
    if any(max(g) > 0 for _, g in gammas):  # the penalty's ramp, on a log axis
        twin = ax.twinx()
        for r, g in gammas:
            if max(g) > 0:
                twin.semilogy([x["epoch"] + 1 for x in r["rows"]], g, color="0.6", lw=1, alpha=0.7)
        twin.set_ylabel("gamma (grey)", color="0.4")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (dashed: first epoch at full gamma; star: the epoch --adv-select robust kept)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="write the plot here (PNG)")
    args = p.parse_args(argv)
    runs = [load(r) for r in args.runs]
    print(table(runs))
    if args.out:
        plot(runs, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
