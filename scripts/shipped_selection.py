"""The shipped model's selection rule applied to the recorded validation figures (docs/shipped-model.md).

    python scripts/shipped_selection.py [--regimes quick quick-d32] [--seeds 0 1 2]

Reads, per candidate ``fashion-mnist_cnn_<regime>_bin_enc_s<seed>``, the validation accuracy from
``docs/runs/<run>/metrics.json`` (or ``research/runs/``) and the served score's validation AUROCs (``ood_eval.val_served``: errors vs correct
and the validation split vs its inverted / noise / rot90 / shuffled copies) from
``research/regimes/<regime>_bin_enc_s<seed>.json``. The rule, fixed before the shipped run was trained again:

1. accuracy guard: keep the candidates with ``val_acc >= best val_acc - 0.005``;
2. among them, the highest mean of the five validation AUROCs;
3. ties (< 0.0005): the narrower latent.

Only validation figures enter the rule; the test figures (test accuracy, MNIST AUROC and FPR at 95% ID acceptance,
test misclassification AUROC) are printed beside them for the record, after the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.rundir import METRICS

REPO = Path(__file__).resolve().parents[1]


def _run_dir(run: str) -> Path:
    """A recorded run: the default runs live in ``docs/runs/``, the studies' in ``research/runs/``."""
    docs = REPO / "docs" / "runs" / run
    return docs if docs.is_dir() else REPO / "research" / "runs" / run


VAL_KEYS = ("val_misclf", "val_vs_invert", "val_vs_noise", "val_vs_rot90", "val_vs_shuffle")
GUARD = 0.005
TIE = 0.0005


def candidate(regime: str, seed: int) -> dict:
    run = f"fashion-mnist_cnn_{regime}_bin_enc_s{seed}"
    m = json.loads((_run_dir(run) / METRICS).read_text())
    r = json.loads((REPO / "research/regimes" / f"{regime}_bin_enc_s{seed}.json").read_text())
    o = r["ood_eval"]
    val = {k: o["val_served"][k] for k in VAL_KEYS}
    return {
        "run": run,
        "latent_dim": r["train"]["latent_dim"],
        "val_acc": m["val_acc"],
        **val,
        "val_mean_auroc": sum(val.values()) / len(val),
        "test_acc": m["test_acc"],
        "mnist_auroc": o["mnist_served"]["auroc"],
        "mnist_auroc_ci95": o["mnist_served"]["auroc_ci95"],
        "mnist_fpr95": o["mnist_served"]["fpr95"],
        "test_misclf_auroc": o["misclf_served"]["auroc"],
    }


def select(cands: list[dict]) -> tuple[list[dict], dict]:
    """``(kept by the guard, winner)``."""
    best = max(c["val_acc"] for c in cands)
    kept = [c for c in cands if c["val_acc"] >= best - GUARD]
    top = max(c["val_mean_auroc"] for c in kept)
    tied = [c for c in kept if c["val_mean_auroc"] >= top - TIE]
    return kept, min(tied, key=lambda c: (c["latent_dim"], -c["val_mean_auroc"]))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--regimes", nargs="+", default=["quick", "quick-d32"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    cands = [candidate(r, s) for r in args.regimes for s in args.seeds]
    kept, winner = select(cands)
    print(
        "| run | d | val acc | guard | val misclf | val invert | val noise | val rot90 | val shuffle | val mean | "
        "test acc | MNIST AUROC [95%] | MNIST FPR@95 | test misclf |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cands:
        lo, hi = c["mnist_auroc_ci95"]
        mark = "**" if c is winner else ""
        print(
            f"| {mark}{c['run']}{mark} | {c['latent_dim']} | {c['val_acc']:.4f} | {'kept' if c in kept else 'out'} | "
            + " | ".join(f"{c[k]:.4f}" for k in (*VAL_KEYS, "val_mean_auroc"))
            + f" | {c['test_acc']:.4f} | {c['mnist_auroc']:.4f} [{lo:.4f}, {hi:.4f}] | {c['mnist_fpr95']:.4f} | "
            f"{c['test_misclf_auroc']:.4f} |"
        )
    print(
        f"\nguard: val_acc >= {max(c['val_acc'] for c in cands):.4f} - {GUARD} keeps "
        f"{', '.join(c['run'] for c in kept)}; winner: {winner['run']} (mean validation AUROC "
        f"{winner['val_mean_auroc']:.4f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
