"""How much a max-softmax score that rounds to 1 understates max-softmax as a detector, per trained run.

    python -m research.scripts.max_softmax_ties runs/RUN [runs/RUN ...] [--json OUT]

For each run, on the whole test split (misclassification: correct vs wrong) and on the MNIST test set (OOD): the
share of points whose max-softmax probability ``p`` is exactly 1, and the AUROC of three versions of the same score:
``p`` in float32 (what a max-softmax artifact serves, ``training.score.SoftmaxScore``), ``p`` in float64 from the
float32 logits (the bench's and ood_eval's max-softmax detector before it ranked by ``log p - log(1 - p)``), and the
exact ranking (:class:`robustness.ood.MaxSoftmaxDetector`). Ties at ``p = 1`` are what separates them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from robustness import detection_metrics as M
from robustness.ood import Features, MaxSoftmaxDetector, log_max_softmax
from robustness.ood_sets import make_ood_sets
from training.checkpoint import load_run
from training.data import load_run_data
from training.inference import forward_batches
from training.jsonio import write_json_atomic
from training.score import SoftmaxScore

SERVED_P, FLOAT64_P, EXACT = "float32 p (served)", "float64 p", "exact (log p - log(1 - p))"
PROBABILITIES = (SERVED_P, FLOAT64_P)  # the two versions that are probabilities (and can be 1)


def versions(logits: np.ndarray) -> dict[str, np.ndarray]:
    """The three max-softmax scores of float32 ``logits``; the served one from the artifact's own score module."""
    t = torch.from_numpy(logits)
    with torch.no_grad():
        served = SoftmaxScore()(t, t).reliability.numpy().astype(np.float64)
    return {
        SERVED_P: served,
        FLOAT64_P: np.exp(log_max_softmax(logits)[0]),
        EXACT: MaxSoftmaxDetector().score(Features(logits, logits, None)),
    }


def measure(run: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    net, cfg, _ = load_run(run)
    data = load_run_data(cfg)
    (mnist,), _ = make_ood_sets(
        data.name, data.test.images, data.input_shape, len(data.test), 0, names=("mnist",)
    )
    test, _ = forward_batches(net.eval(), data.test.images, 512, "cpu")
    ood, _ = forward_batches(net, mnist.images, 512, "cpu")
    correct = test.argmax(1) == data.test.labels
    vt, vo = versions(test), versions(ood)
    out = {
        "run": run.name,
        "variant": cfg.variant,
        "test_acc": float(correct.mean()),
        "share_p_is_1_test": {k: float((vt[k] == 1).mean()) for k in PROBABILITIES},
    }
    out["misclassification_auroc"] = {k: M.misclassification_auroc(v, correct) for k, v in vt.items()}
    out["mnist_auroc"] = {k: M.auroc(vt[k], vo[k]) for k in vt}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = [measure(r, args.threads) for r in args.runs]
    keys = list(rows[0]["misclassification_auroc"])
    print(
        "| run | test acc | p = 1 in float32 / float64 | misclf AUROC: "
        + " / ".join(keys)
        + " | MNIST AUROC: same |\n|---|---|---|---|---|"
    )
    for r in rows:
        share = " / ".join(f"{v:.3f}" for v in r["share_p_is_1_test"].values())
        mis = " / ".join(f"{r['misclassification_auroc'][k]:.4f}" for k in keys)
        ood = " / ".join(f"{r['mnist_auroc'][k]:.4f}" for k in keys)
        print(f"| {r['run']} | {r['test_acc']:.4f} | {share} | {mis} | {ood} |")
    if args.json:
        write_json_atomic(args.json, {"runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
