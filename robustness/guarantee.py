"""The risk guarantee checked on test: realized selective error and coverage next to the certified bound.

An artifact exported with ``python -m training.export RUN --target-risk ALPHA`` certifies, on a calibration part of
its validation split, that the error rate among accepted answers is ``<= ALPHA`` with probability ``>= 1 - DELTA``
(:mod:`training.selective_risk`). :func:`realized` measures what the served decision does on held-out test points:
the selective error with its exact 95% interval and the coverage, beside ALPHA, the bound at the threshold and the
calibration coverage. The bench records it per model with a guarantee (``guarantee`` in ``results.json``);

    python -m robustness.guarantee models/fashion-mnist_bin_enc/model.onnx [--json OUT]

measures it on the whole test split of the artifact's dataset through ONNX Runtime (the served graph).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from serving.artifact import load_artifact
from serving.artifact_format import ArtifactError
from training.data import DatasetNotFoundError, load_dataset
from training.jsonio import clean_json, write_json_atomic


def realized(acceptance: dict, accepted: np.ndarray, correct: np.ndarray) -> dict | None:
    """Realized selective error (exact 95% interval) and coverage of ``accepted`` test points beside the certified
    figures of ``acceptance`` (an artifact's ``acceptance`` block); ``None`` when it certifies no risk."""
    if not acceptance or acceptance.get("mode") != "risk":
        return None
    acc, ok = np.asarray(accepted, dtype=bool).reshape(-1), np.asarray(correct, dtype=bool).reshape(-1)
    n, k = int(acc.sum()), int((acc & ~ok).sum())
    ci = binomtest(k, n).proportion_ci(0.95, method="exact") if n else None
    return clean_json(
        {
            "n_test": int(acc.size),
            "accepted": n,
            "errors_accepted": k,
            "coverage": float(acc.mean()) if acc.size else None,
            "selective_risk": k / n if n else None,
            "selective_risk_ci95": [float(ci.low), float(ci.high)] if ci is not None else None,
            "alpha": acceptance["alpha"],
            "delta": acceptance["delta"],
            "upper_bound_at_threshold": acceptance["upper_bound_at_threshold"],
            "calibration_coverage": acceptance["calibration_coverage"],
            "calibration_n": acceptance["calibration_n"],
            "risk_at_most_alpha": (k / n <= acceptance["alpha"]) if n else None,
        }
    )


def measure_artifact(path: Path, data_dir: str | None = None, threads: int | None = None) -> dict:
    """:func:`realized` of the artifact at ``path`` on the whole test split of its dataset (ONNX Runtime)."""
    art = load_artifact(path, providers="CPUExecutionProvider", threads=threads)
    if art.acceptance.get("mode") != "risk":
        raise ValueError(
            f"{path}: expected an artifact exported with --target-risk, got acceptance mode "
            f"{art.acceptance.get('mode')!r} (no guarantee to check)"
        )
    data = load_dataset(art.metadata["dataset"], data_dir)
    out = art.run(data.test.images.astype(np.float32) / 255.0)
    accepted, _ = art.decide(out)
    result = realized(art.acceptance, accepted, out["logits"].argmax(1) == data.test.labels)
    return {
        "artifact": str(path),
        "dataset": art.metadata["dataset"],
        "split": "test",
        "threshold": art.threshold,
        **result,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m robustness.guarantee",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", type=Path, help="model.onnx exported with --target-risk")
    p.add_argument("--data-dir", help="dataset directory (default: the dataset's standard location)")
    p.add_argument("--threads", type=int, help="ONNX Runtime CPU threads")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        r = measure_artifact(args.artifact, args.data_dir, args.threads)
    except (ArtifactError, DatasetNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    risk = (
        "no test point accepted"
        if not r["accepted"]
        else f"selective error {r['selective_risk']:.4f} [95% {r['selective_risk_ci95'][0]:.4f}, "
        f"{r['selective_risk_ci95'][1]:.4f}] ({r['errors_accepted']} of {r['accepted']} accepted)"
    )
    print(
        f"{r['artifact']}: on {r['n_test']} {r['dataset']} test points, {risk}, coverage {r['coverage']:.4f}; certified <= {r['alpha']:g} at delta {r['delta']:g} (bound at the threshold "
        f"{r['upper_bound_at_threshold']:.4f}, calibration coverage {r['calibration_coverage']:.4f} of "
        f"{r['calibration_n']})"
    )
    if args.json:
        write_json_atomic(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
