"""OOD and misclassification evaluation of an exported artifact (the numbers in docs/reliability.md).

    python scripts/ood_eval.py runs/fashion-mnist_cnn_quick_bin_enc_s0 \
        --baseline runs/fashion-mnist_cnn_quick_no_pen_s0 [--ood-dir ../shared/data/mnist] [--threads 1]

Exports ``RUN_DIR/model.onnx`` if it is missing (or with ``--reexport``), then everything runs through the
artifact (ONNX Runtime, :mod:`serving.artifact`). Printed:

1. score selection, validation data only: for the vertex-geometry candidates and max-softmax, the
   misclassification AUROC on the validation split and the AUROC of validation images vs synthetic shifts derived
   from them (uniform noise, inverted, rotated 90°, pixel-shuffled). Neither the test split nor MNIST is used;
2. ID = Fashion-MNIST test vs OOD = MNIST test: AUROC (sklearn, 95% bootstrap interval) and FPR at 95% ID
   acceptance of the reliability; the same for the baseline's max-softmax and a Mahalanobis detector on the
   baseline's penultimate features (class means + shared covariance fitted on its training split);
3. misclassification AUROC (errors vs correct on the test split) of the reliability vs max-softmax;
4. share of ID test (and OOD) inputs accepted at the calibrated threshold, and the rejection reasons;
5. post hoc (after the choice): every candidate on test-vs-MNIST, for the record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.artifact import Artifact, load_artifact  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.reliability import VertexGeometry, auroc, calibrate_threshold, fpr_at_tpr  # noqa: E402


def ensure_artifact(run_dir: Path, reexport: bool, threads: int) -> Path:
    path = run_dir / "model.onnx"
    if reexport or not path.is_file():
        import torch

        from training.export import export_run

        torch.set_num_threads(threads)
        print(f"exporting {run_dir} ...", flush=True)
        export_run(run_dir, path)
    return path


def run_images(art: Artifact, images: np.ndarray) -> dict[str, np.ndarray]:
    return art.run(images.astype(np.float32) / 255.0, batch_size=512)


def synthetic_shifts(images: np.ndarray, n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Distribution shifts derived from the validation images only (no external data)."""
    rng = np.random.default_rng(seed)
    x = images[:n]
    hw = x.shape[2] * x.shape[3]
    return {
        "noise": rng.integers(0, 256, size=x.shape, dtype=np.uint8),
        "invert": 255 - x,
        "rot90": np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3))),
        "shuffle": np.stack([im.reshape(im.shape[0], -1)[:, rng.permutation(hw)].reshape(im.shape) for im in x]),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def vertex_whitening(geo: VertexGeometry, z: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                     ridge: float = 1e-6) -> np.ndarray:
    """``W`` (``W Wᵀ = Σ⁻¹``) of the residual ``u - code(class)`` around the *ideal* ±1 vertices on correctly
    classified training latents: the alternative to the served whitening, which is around the class centres."""
    ok = logits.argmax(1) == labels
    r = geo.scaled(z[ok]).astype(np.float64) - geo.codes[labels[ok]]
    cov = r.T @ r / len(r)
    cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.cholesky(np.linalg.inv(cov))


def whitened_dist(u: np.ndarray, centres: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """``sqrt(|(u - centres) W|² / d)`` row by row (``centres`` broadcast against ``u``)."""
    w = (u.astype(np.float64) - centres) @ whiten
    return np.sqrt((w**2).mean(1))


def candidates(out: dict[str, np.ndarray], geo: VertexGeometry | None,
               w_vertex: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Candidate reliability scores (higher = more reliable) computed from the artifact's z and logits."""
    logits = out["logits"]
    c = {"max_softmax": softmax(logits).max(1)}
    if geo is None:
        return c
    u = geo.scaled(out["z"])
    pred = logits.argmax(1)
    v = geo.codes[pred]
    s = np.where(u > 0, 1.0, -1.0)
    nearest = geo.score(out["z"], logits)["nearest_vertex_class"]
    dist_nearest_vertex = np.sqrt(((u - s) ** 2).mean(1))
    c.update({
        "dist_pred_rms (v1 score)": -np.sqrt(((u - v) ** 2).mean(1)),
        "dist_nearest_rms": -dist_nearest_vertex,
        "dist_nearest_gated": -(dist_nearest_vertex + 10.0 * (nearest != pred)),
        "dist_pred_l1": -np.abs(u - v).mean(1),
        "dist_pred_linf": -np.abs(u - v).max(1),
    })
    if w_vertex is not None:
        c.update({
            "whitened_pred_vertex": -whitened_dist(u, geo.codes[pred], w_vertex),
            "dist_class_centre (chosen, v2)": -out["dist_class_centre"].astype(np.float64),
            "whitened_min_mean": -np.min([whitened_dist(u, ck, geo.whiten) for ck in geo.centres], axis=0),
            "dist_class_centre + log max_softmax": -out["dist_class_centre"] + np.log(np.maximum(c["max_softmax"], 1e-30)),
        })
    return c


def boot_auroc(pos: np.ndarray, neg: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, float, float]:
    """AUROC (pos = ID / correct, scored higher) and a 95% bootstrap interval."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    point = float(roc_auc_score(y, s))
    stats = []
    for _ in range(n_boot):
        ip = rng.integers(0, len(pos), len(pos))
        ineg = len(pos) + rng.integers(0, len(neg), len(neg))
        idx = np.r_[ip, ineg]
        stats.append(roc_auc_score(y[idx], s[idx]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


class Mahalanobis:
    """Class means + shared (tied) covariance on training features; score = -min_k squared distance."""

    def __init__(self, feats: np.ndarray, labels: np.ndarray, ridge: float = 1e-6):
        f = feats.astype(np.float64)
        k = int(labels.max()) + 1
        self.means = np.stack([f[labels == c].mean(0) for c in range(k)])
        centred = f - self.means[labels]
        cov = centred.T @ centred / len(f)
        cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.precision = np.linalg.inv(cov)

    def score(self, feats: np.ndarray) -> np.ndarray:
        f = feats.astype(np.float64)
        d = np.stack([np.einsum("ij,jk,ik->i", f - m, self.precision, f - m) for m in self.means], axis=1)
        return -d.min(1)


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--baseline", type=Path, help="a no_pen run directory (max-softmax and Mahalanobis baselines)")
    p.add_argument("--ood", default="mnist", help="OOD dataset name (its test split is used)")
    p.add_argument("--ood-dir", default=None)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch CPU threads")
    p.add_argument("--reexport", action="store_true", help="export again even if model.onnx exists")
    p.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    args = p.parse_args()

    path = ensure_artifact(args.run_dir, args.reexport, args.threads)
    art = load_artifact(path, threads=args.threads)
    md = art.metadata
    cfg = json.loads((args.run_dir / "config.json").read_text())["train"]
    data = load_dataset(md["dataset"], cfg.get("data_dir"), cfg["val_fraction"], cfg["seed"])
    ood = load_dataset(args.ood, args.ood_dir)
    geo = VertexGeometry.from_metadata(md) if md["score"]["name"] == "vertex_distance" else None
    print(f"artifact {path} variant={md['variant']} score={art.score_name} threshold={art.threshold:.6g} "
          f"provider={art.provider}")
    report: dict = {"artifact": str(path), "variant": md["variant"], "score": art.score_name,
                    "threshold": art.threshold, "target_accept_rate": art.target_accept_rate}

    val_out = run_images(art, data.val.images)
    test_out = run_images(art, data.test.images)
    ood_out = run_images(art, ood.test.images)

    # ---------------------------------------------------------------- 1. selection on validation data only
    print("\n[1] score selection on VALIDATION data only (AUROC; higher = better)")
    shifts = {k: run_images(art, v) for k, v in synthetic_shifts(data.val.images).items()}
    w_vertex = None
    if geo is not None:
        own_train = run_images(art, data.train.images)
        w_vertex = vertex_whitening(geo, own_train["z"], own_train["logits"], data.train.labels)
    val_c = candidates(val_out, geo, w_vertex)
    val_err = val_out["logits"].argmax(1) != data.val.labels
    header = f"{'candidate':30s}{'val misclf':>12s}" + "".join(f"{'val vs ' + k:>18s}" for k in shifts)
    print(header)
    sel = {}
    for name, s in val_c.items():
        row = {"val_misclf": auroc(s[~val_err], s[val_err])}
        for k, o in shifts.items():
            row[f"val_vs_{k}"] = auroc(s, candidates(o, geo, w_vertex)[name])
        sel[name] = row
        print(f"{name:30s}" + "".join(f"{v:12.4f}" if i == 0 else f"{v:18.4f}" for i, v in enumerate(row.values())))
    report["selection_val"] = sel

    # ---------------------------------------------------------------- 2. ID test vs OOD
    rel_id, rel_ood = test_out["reliability"], ood_out["reliability"]
    print(f"\n[2] ID = {md['dataset']} test ({len(rel_id)}) vs OOD = {args.ood} test ({len(rel_ood)})")
    rows = {f"reliability ({art.score_name}, {md['variant']})": (rel_id, rel_ood)}
    if geo is not None:
        rows[f"max_softmax ({md['variant']})"] = (test_out["probs"].max(1), ood_out["probs"].max(1))
    base_art = None
    if args.baseline:
        bpath = ensure_artifact(args.baseline, args.reexport, args.threads)
        base_art = load_artifact(bpath, threads=args.threads)
        b_test, b_ood = run_images(base_art, data.test.images), run_images(base_art, ood.test.images)
        rows[f"max_softmax ({base_art.variant} baseline)"] = (b_test["reliability"], b_ood["reliability"])
        b_train = run_images(base_art, data.train.images)
        maha = Mahalanobis(b_train["z"], data.train.labels)
        rows[f"mahalanobis ({base_art.variant} features, {b_train['z'].shape[1]}-d)"] = (
            maha.score(b_test["z"]), maha.score(b_ood["z"]))
    if geo is not None:
        maha_z = Mahalanobis(own_train["z"], data.train.labels)
        rows[f"mahalanobis ({md['variant']} z, {own_train['z'].shape[1]}-d)"] = (
            maha_z.score(test_out["z"]), maha_z.score(ood_out["z"]))
    print(f"{'detector':48s}{'AUROC [95% bootstrap]':>30s}{'FPR@95%TPR':>12s}")
    report["ood"] = {}
    for name, (sid, sood) in rows.items():
        a = boot_auroc(sid, sood)
        fpr = fpr_at_tpr(sid, sood, 0.95)
        report["ood"][name] = {"auroc": a[0], "auroc_ci95": [a[1], a[2]], "fpr_at_95tpr": fpr}
        print(f"{name:48s}{fmt(a):>30s}{fpr:12.4f}")

    # ---------------------------------------------------------------- 3. misclassification
    print(f"\n[3] misclassification AUROC on {md['dataset']} test (correct vs errors)")
    err = test_out["logits"].argmax(1) != data.test.labels
    mis = {f"reliability ({md['variant']})": rel_id, f"max_softmax ({md['variant']})": test_out["probs"].max(1)}
    if base_art is not None:
        b_err = b_test["logits"].argmax(1) != data.test.labels
        print(f"test acc {md['variant']} {1 - err.mean():.4f} ({err.sum()} errors); "
              f"{base_art.variant} {1 - b_err.mean():.4f} ({b_err.sum()} errors)")
    else:
        print(f"test acc {1 - err.mean():.4f} ({err.sum()} errors)")
    report["misclassification"] = {}
    for name, s in mis.items():
        a = boot_auroc(s[~err], s[err])
        report["misclassification"][name] = {"auroc": a[0], "auroc_ci95": [a[1], a[2]]}
        print(f"{name:48s}{fmt(a):>30s}")
    if base_art is not None:
        s = b_test["reliability"]
        a = boot_auroc(s[~b_err], s[b_err])
        report["misclassification"][f"max_softmax ({base_art.variant} baseline, own errors)"] = {
            "auroc": a[0], "auroc_ci95": [a[1], a[2]]}
        print(f"{f'max_softmax ({base_art.variant} baseline, own errors)':48s}{fmt(a):>30s}")

    # ---------------------------------------------------------------- 4. acceptance at the calibrated threshold
    acc_id, reasons_id = art.decide(test_out)
    acc_ood, reasons_ood = art.decide(ood_out)
    print(f"\n[4] calibrated threshold {art.threshold:.6g} (target accept {art.target_accept_rate:.2%} on val; "
          f"val accepted {md['calibration']['accept_rate']:.4f})")
    print(f"ID test accepted {acc_id.mean():.4f} (target {art.target_accept_rate:.2f} ± 0.015); "
          f"accuracy accepted {(~err[acc_id]).mean():.4f} vs all {(~err).mean():.4f}")
    print(f"OOD accepted {acc_ood.mean():.4f}")
    from collections import Counter

    rid, rood = Counter(r for r in reasons_id if r), Counter(r for r in reasons_ood if r)
    print(f"rejection reasons ID {dict(rid)}; OOD {dict(rood)}")
    report["acceptance"] = {"id_test_accept": float(acc_id.mean()), "ood_accept": float(acc_ood.mean()),
                            "acc_accepted": float((~err[acc_id]).mean()), "reasons_id": dict(rid),
                            "reasons_ood": dict(rood), "val_accept": md["calibration"]["accept_rate"]}
    if base_art is not None:
        b_acc, _ = base_art.decide(b_test)
        b_acc_ood, _ = base_art.decide(b_ood)
        print(f"baseline ({base_art.variant}, max-softmax, threshold {base_art.threshold:.6g}): ID accepted "
              f"{b_acc.mean():.4f}, OOD accepted {b_acc_ood.mean():.4f}")
        report["acceptance"]["baseline"] = {"threshold": base_art.threshold, "id_test_accept": float(b_acc.mean()),
                                            "ood_accept": float(b_acc_ood.mean())}

    # ---------------------------------------------------------------- 5. post hoc
    if geo is not None:
        print("\n[5] post hoc (NOT used for the choice): every candidate on ID test vs OOD")
        tc, oc = candidates(test_out, geo, w_vertex), candidates(ood_out, geo, w_vertex)
        report["post_hoc"] = {}
        for name in tc:
            a, fpr = auroc(tc[name], oc[name]), fpr_at_tpr(tc[name], oc[name], 0.95)
            m = auroc(tc[name][~err], tc[name][err])
            report["post_hoc"][name] = {"ood_auroc": a, "fpr_at_95tpr": fpr, "test_misclf_auroc": m}
            print(f"{name:30s} OOD AUROC {a:.4f}  FPR@95 {fpr:.4f}  test misclf AUROC {m:.4f}")
        q = calibrate_threshold(rel_id, 0.95)
        report["post_hoc"]["test_quantile_threshold"] = q
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
