"""OOD and misclassification evaluation of a run's served score (the figures in docs/reliability.md).

    python scripts/ood_eval.py runs/fashion-mnist_cnn_quick_bin_enc_s0 \
        --baseline runs/fashion-mnist_cnn_quick_no_pen_s0 --threads 1 --json docs/ood_eval_s0.json

A thin command over :mod:`robustness`: the model's logits and z (:func:`robustness.ood.model_features`), the
served score module rebuilt from the artifact (:func:`training.score.score_from_metadata`; ``RUN/model.onnx`` is
exported first when missing or stale), the detectors of :mod:`robustness.ood` and the metrics of
:mod:`robustness.detection_metrics`: the bench's pipeline, so ``--n-id 2000 --n-ood 1000 --n-fit 5000`` reproduces the
bench's ``quick`` numbers for the same sets. Printed:

1. score selection on validation data only (:mod:`robustness.selection`): per candidate score, the validation
   misclassification AUROC and the AUROC of validation images vs shifts derived from them;
2. ID test vs each OOD set (default: the MNIST test set in data/mnist): AUROC with a bootstrap interval and FPR at
   95% ID acceptance, per detector and model;
3. misclassification AUROC on the ID test points (correct vs errors) with a bootstrap interval;
4. acceptance at the artifact's calibrated threshold and the rejection reasons;
5. post hoc (not used for the choice): every candidate on ID test vs the first OOD set.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from robustness import detection_metrics as M
from robustness import ood, ood_sets
from robustness.selection import (
    SHIFT_TOLERANCE,
    candidate_scores,
    ideal_vertex_whitening,
    pick,
    selection_table,
    validation_shifts,
    with_two_thresholds,
)
from serving.artifact import Artifact, load_artifact
from training.checkpoint import load_run
from training.data import DatasetNotFoundError, DatasetSplits, load_run_data
from training.export import ensure_artifact
from training.geometry import agrees_with_class_code, sign_codes
from training.jsonio import write_json_atomic
from training.mahalanobis import TiedGaussian
from training.score import SoftmaxScore, VertexScore, score_from_metadata

DEFAULT_DETECTORS = ("reliability", "max_softmax", "mahalanobis")


@dataclass
class Evaluated:
    """One run: its artifact, score module and the features of every point set the evaluation uses."""

    label: str
    art: Artifact
    model: torch.nn.Module
    score: VertexScore | SoftmaxScore
    fit: ood.Features
    fit_labels: np.ndarray
    test: ood.Features
    ood: dict[str, ood.Features]
    detectors: dict[str, ood.Detector]
    ideal_vertex: TiedGaussian | None = None  # whitening around the ideal ±1 vertices (a selection candidate)

    @property
    def vertex_score(self) -> VertexScore | None:
        """The score module when it is the vertex score (a binary-encoding artifact), else None."""
        return self.score if isinstance(self.score, VertexScore) else None

    def features(self, images: np.ndarray, device: str) -> ood.Features:
        return ood.model_features(self.model, self.score, images, device=device)


def evaluate_run(
    run_dir: Path,
    data: DatasetSplits,
    sets: list[ood_sets.OODSet],
    id_idx: np.ndarray,
    fit_idx: np.ndarray,
    args: argparse.Namespace,
) -> Evaluated:
    path, exported = ensure_artifact(run_dir, data, args.reexport)
    art = load_artifact(path, providers="CPUExecutionProvider", threads=args.threads)
    model = load_run(run_dir)[0].to(args.device)
    score = score_from_metadata(art.metadata)
    feats = partial(ood.model_features, model, score, device=args.device)
    fit, fit_labels = feats(data.train.images[fit_idx]), data.train.labels[fit_idx]
    label = f"{art.variant} ({art.score_name})"
    print(
        f"{label}: {path}{' (exported now)' if exported else ''}, threshold {art.threshold:.6g}", flush=True
    )
    return Evaluated(
        label,
        art,
        model,
        score,
        fit,
        fit_labels,
        feats(data.test.images[id_idx]),
        {s.name: feats(s.images) for s in sets},
        ood.fit_detectors(fit, fit_labels, tuple(args.detectors), args.knn_k),
        ideal_vertex_whitening(score, fit, fit_labels) if isinstance(score, VertexScore) else None,
    )


def section_selection(
    run: Evaluated,
    data: DatasetSplits,
    val: ood.Features,
    val_cands: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> dict:
    shifts = {
        k: run.features(v, args.device)
        for k, v in validation_shifts(data.val.images, args.shift_n, args.seed).items()
    }
    vertex = run.vertex_score
    table = selection_table(val, data.val.labels, shifts, vertex, run.ideal_vertex, reference=val_cands)
    cols = list(next(iter(table.values())))
    print(
        f"\n[1] score selection on VALIDATION data only (AUROC; {len(data.val)} val images, shifts of the first "
        f"{min(args.shift_n, len(data.val))})"
    )
    print(f"{'candidate':60s}" + "".join(f"{c:>16s}" for c in cols))
    for name, row in table.items():
        print(f"{name:60s}" + "".join(f"{row[c]:16.4f}" for c in cols))
    if vertex is None:
        return {"candidates": table}
    chosen = pick(table)
    print(
        f"validation picks: {chosen} (highest val_misclf among the served score and the candidates that beat it "
        f"there and lose at most {SHIFT_TOLERANCE:g} AUROC on every shift)"
    )
    return {"candidates": table, "pick": chosen, "shift_tolerance": SHIFT_TOLERANCE}


def section_ood(runs: list[Evaluated], args: argparse.Namespace) -> dict:
    print(
        f"\n[2] ID test ({len(runs[0].test.logits)}) vs OOD ({', '.join(f'{k} {len(v.logits)}' for k, v in runs[0].ood.items())}); "
        f"AUROC [95% bootstrap, {args.n_boot}] and FPR at 95% ID acceptance"
    )
    out: dict = {}
    for run in runs:
        s_id = ood.detector_scores(run.detectors, run.test)
        s_ood = {k: ood.detector_scores(run.detectors, f) for k, f in run.ood.items()}
        table = ood.ood_table(s_id, s_ood, n_boot=args.n_boot, boot_seed=args.seed)
        for set_name, rows in table.items():
            for det, row in rows.items():
                name = (
                    f"{det}, {run.label}, z {run.fit.z.shape[1]}-d"
                    if det in ("mahalanobis", "knn")
                    else f"{det}, {run.label}"
                )
                out.setdefault(set_name, {})[name] = row
                ci = " [{:.4f}, {:.4f}]".format(*row["auroc_ci95"]) if "auroc_ci95" in row else ""
                print(f"  {set_name:10s}{name:52s}{row['auroc']:.4f}{ci}   FPR@95 {row['fpr95']:.4f}")
    return out


def section_misclassification(runs: list[Evaluated], labels: np.ndarray, args: argparse.Namespace) -> dict:
    print(
        f"\n[3] misclassification AUROC on the ID test points (correct vs errors), [95% bootstrap, {args.n_boot}]"
    )
    out: dict = {}
    for run in runs:
        correct = run.test.logits.argmax(1) == labels
        print(f"  {run.label}: accuracy {correct.mean():.4f} ({(~correct).sum()} errors)")
        for det in ("reliability", "max_softmax"):
            if det not in run.detectors:
                continue
            s = run.detectors[det].score(run.test)
            a = M.misclassification_auroc(s, correct)
            ci = M.bootstrap_interval(s[correct], s[~correct], M.auroc, args.n_boot, args.seed)
            out[f"{det}, {run.label}"] = {"auroc": a, "auroc_ci95": list(ci), "errors": int((~correct).sum())}
            print(f"    {det:14s}{a:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")
    return out


def section_acceptance(runs: list[Evaluated], labels: np.ndarray) -> dict:
    print("\n[4] acceptance at the calibrated threshold (target share of validation inputs accepted)")
    out: dict = {}
    for run in runs:
        art = run.art
        acc_id, why_id = art.decide(ood.score_outputs(run.score, run.test.logits, run.test.z))
        correct = run.test.logits.argmax(1) == labels
        row = {
            "threshold": art.threshold,
            "target_accept_rate": art.target_accept_rate,
            "val_accept": art.metadata["calibration"]["accept_rate"],
            "id_test_accept": float(acc_id.mean()),
            "acc_accepted": float(correct[acc_id].mean()) if acc_id.any() else None,
            "acc_all": float(correct.mean()),
            "reasons_id": dict(Counter(r for r in why_id if r)),
            "ood": {},
        }
        for k, f in run.ood.items():
            acc, why = art.decide(ood.score_outputs(run.score, f.logits, f.z))
            row["ood"][k] = {"accept": float(acc.mean()), "reasons": dict(Counter(r for r in why if r))}
        if isinstance(run.score, VertexScore):  # the binary encoding where the service answers
            pred = run.test.logits.argmax(1)
            codes = sign_codes(run.test.z, run.score.midpoint.numpy())
            agree = agrees_with_class_code(codes, pred, run.test.logits.shape[1])
            row["same_encoding_all"], row["same_encoding_accepted"] = (
                float(agree.mean()),
                float(agree[acc_id].mean()),
            )
            print(
                f"  {run.label}: same-encoding {row['same_encoding_all']:.4f} of all ID test inputs, "
                f"{row['same_encoding_accepted']:.4f} of the accepted ones"
            )
        out[run.label] = row
        print(
            f"  {run.label}: threshold {art.threshold:.6g}; ID test accepted {row['id_test_accept']:.4f} "
            f"(val {row['val_accept']:.4f}); accuracy accepted {row['acc_accepted']:.4f} vs all {row['acc_all']:.4f}; "
            f"rejections {row['reasons_id']}"
        )
        for k, v in row["ood"].items():
            print(f"    {k}: accepted {v['accept']:.4f}; rejections {v['reasons']}")
    return out


def section_post_hoc(run: Evaluated, labels: np.ndarray, ref: dict[str, np.ndarray]) -> dict:
    """Every candidate on test; ``ref`` (the validation candidates) gives the two-threshold rule's quantiles."""
    if not isinstance(run.score, VertexScore) or not run.ood:
        return {}
    set_name, f_ood = next(iter(run.ood.items()))
    print(f"\n[5] post hoc (NOT used for the choice): every candidate on ID test vs {set_name}")
    tc = with_two_thresholds(candidate_scores(run.test, run.score, run.ideal_vertex), ref)
    oc = with_two_thresholds(candidate_scores(f_ood, run.score, run.ideal_vertex), ref)
    correct = run.test.logits.argmax(1) == labels
    out = {}
    for name in tc:
        row = {
            "ood_auroc": M.auroc(tc[name], oc[name]),
            "fpr95": M.fpr_at_tpr(tc[name], oc[name]),
            "test_misclf_auroc": M.misclassification_auroc(tc[name], correct),
        }
        out[name] = row
        print(
            f"  {name:60s} OOD AUROC {row['ood_auroc']:.4f}  FPR@95 {row['fpr95']:.4f}  "
            f"test misclf AUROC {row['test_misclf_auroc']:.4f}"
        )
    return {"ood_set": set_name, "candidates": out}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python scripts/ood_eval.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--baseline", type=Path, help="a second run directory evaluated the same way (e.g. no_pen)"
    )
    p.add_argument(
        "--ood-sets",
        default="mnist",
        help=f"comma-separated OOD sets (default mnist) of: "
        f"{', '.join(ood_sets.ALL_SETS)}; a named set that cannot be built is an error",
    )
    p.add_argument("--ood-data-dir", help="MNIST IDX directory for the mnist set (default: data/mnist)")
    p.add_argument("--n-id", type=int, help="ID test points (default: the whole test split)")
    p.add_argument("--n-ood", type=int, default=10000, help="points per OOD set (default 10000)")
    p.add_argument("--n-fit", type=int, help="training points the detectors are fitted on (default: all)")
    p.add_argument("--seed", type=int, default=0, help="point selection, OOD generation and bootstrap seed")
    p.add_argument(
        "--detectors",
        default=",".join(DEFAULT_DETECTORS),
        help=f"comma-separated of: {', '.join(ood.DETECTORS)} (default {','.join(DEFAULT_DETECTORS)})",
    )
    p.add_argument("--knn-k", type=int, default=10)
    p.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap resamples for the intervals (default 200)"
    )
    p.add_argument("--shift-n", type=int, default=2000, help="validation images per shift in section 1")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reexport", action="store_true", help="export again even if model.onnx is up to date")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file (atomically)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.detectors = tuple(d for d in args.detectors.split(",") if d)
    unknown = [d for d in args.detectors if d not in ood.DETECTORS]
    if unknown:
        print(
            f"error: unknown detectors {unknown}; expected some of {', '.join(ood.DETECTORS)}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    try:
        _, cfg, ckpt = load_run(args.run_dir)
        data = load_run_data(cfg)
        sets, skipped = ood_sets.make_ood_sets(
            data.name,
            data.test.images,
            data.input_shape,
            args.n_ood,
            args.seed,
            args.ood_data_dir,
            tuple(s for s in args.ood_sets.split(",") if s),
        )
        if skipped:
            raise ood_sets.OODSetError("; ".join(f"OOD set {s.name!r} skipped: {s.reason}" for s in skipped))
        id_idx, fit_idx = ood.evaluation_points(
            len(data.test), len(data.train), args.n_id, args.n_fit, args.seed
        )
        print(
            f"ID {data.name}: {len(id_idx)} test points, detectors fitted on {len(fit_idx)} training points; OOD "
            + ", ".join(f"{s.name} ({s.source}, {len(s.images)})" for s in sets)
        )
        runs = [evaluate_run(args.run_dir, data, sets, id_idx, fit_idx, args)]
        if args.baseline:
            runs.append(evaluate_run(args.baseline, data, sets, id_idx, fit_idx, args))
    except (FileNotFoundError, DatasetNotFoundError, ood_sets.OODSetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels = data.test.labels[id_idx]
    val = runs[0].features(data.val.images, args.device)
    val_cands = candidate_scores(val, runs[0].vertex_score, runs[0].ideal_vertex)
    report = {
        "points": {
            "id_test": int(len(id_idx)),
            "fit_train": int(len(fit_idx)),
            "seed": args.seed,
            "ood": {s.name: {"n": int(len(s.images)), "source": s.source} for s in sets},
            "n_boot": args.n_boot,
            "shift_n": args.shift_n,
        },
        "runs": {
            r.label: {"artifact": str(r.art.path), "variant": r.art.variant, "score": r.art.score_name}
            for r in runs
        },
        "selection_val": section_selection(runs[0], data, val, val_cands, args),
        "ood": section_ood(runs, args),
        "misclassification": section_misclassification(runs, labels, args),
        "acceptance": section_acceptance(runs, labels),
        "post_hoc": section_post_hoc(runs[0], labels, val_cands),
    }
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
