"""All measurements of one trained model: artifact parity, adversarial evaluation, OOD / misclassification."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustness import detection_metrics as metrics
from robustness.ablation import mahalanobis_option
from robustness.adversarial import evaluate_adversarial
from robustness.ccat import ccat_figures, validation_features
from robustness.config import BenchConfig, relative_path
from robustness.guarantee import realized as realized_guarantee
from robustness.ood import Features, fit_detectors, log_max_softmax
from robustness.ood_sets import OODSet
from robustness.paper import paper_deepfool
from robustness.reject_option import RejectOption, graph_confirm
from robustness.runs import ModelRun
from serving.artifact import Artifact, accepts, load_artifact
from training.calibration import accept_summary
from training.checkpoint import load_run
from training.export import ensure_artifact
from training.inference import forward_batches, to_tensor
from training.reliability import VERTEX_SCORE, VertexGeometry
from training.rundir import read_metrics
from training.score import score_module


@dataclass
class Inputs:
    """What every model of a bench sees: the data, the adversarial sample, the OOD sets and the index sets."""

    data: object
    x_adv: torch.Tensor
    y_adv: torch.Tensor
    ood_sets: list[OODSet]
    id_idx: np.ndarray
    fit_idx: np.ndarray
    adv_idx: np.ndarray | None = (
        None  # test indices of x_adv, stored with the results for cross-bench pairing
    )


def served_option(art: Artifact, device: str) -> RejectOption:
    """The artifact's own reject option: its score module (rebuilt from the metadata) and its threshold, with
    every adaptive success confirmed by the ONNX graph."""
    geo = VertexGeometry.from_metadata(art.metadata) if art.score_name == VERTEX_SCORE else None
    return RejectOption(
        art.score_name,
        score_module(geo).to(device),
        art.threshold,
        graph_confirm(art.run, art.threshold),
        art.run,
    )


def _features(net, images: np.ndarray, option: RejectOption, device: str) -> Features:
    logits, z = forward_batches(net, images, 512, device)
    with torch.no_grad():
        rel = option.score(torch.from_numpy(logits).to(device), torch.from_numpy(z).to(device)).reliability
    return Features(logits, z, rel.cpu().numpy())


def _parity(net, art: Artifact, option: RejectOption, images: np.ndarray, device: str) -> dict:
    served = art.run(to_tensor(images).numpy())
    f = _features(net, images, option, device)
    return {
        "n": int(len(images)),
        "max_abs_diff_reliability": float(np.abs(f.reliability - served["reliability"]).max()),
        "argmax_agreement": float((f.logits.argmax(1) == served["logits"].argmax(1)).mean()),
        "accept_agreement": float(
            (accepts(f.reliability, option.threshold) == accepts(served["reliability"], art.threshold)).mean()
        ),
    }


def geometry_summary(run_dir: Path) -> dict:
    m = read_metrics(run_dir)
    if not m:
        return {}
    out = {
        k: m.get(k)
        for k in (
            "num_classes",
            "train_acc",
            "val_acc",
            "test_acc",
            "latent_width",
            "bimodal_dims",
            "all_dims_bimodal",
        )
    }
    for k in ("same_encoding", "distinct_class_codes", "nc1", "sigma_w_rel"):
        if k in m.get("test", {}):
            out[f"test_{k}"] = m["test"][k]
    if "dimensions" in m:
        out["dimension_separation"] = [d.get("separation") for d in m["dimensions"]]
    return out


def ood_and_selective(cfg: BenchConfig, net, inp: Inputs, option: RejectOption) -> tuple[dict, dict]:
    """OOD detection, misclassification detection and calibration with every detector; returns (entry, arrays)."""
    data = inp.data
    f_fit = _features(net, data.train.images[inp.fit_idx], option, cfg.device)
    f_id = _features(net, data.test.images[inp.id_idx], option, cfg.device)
    y_id = data.test.labels[inp.id_idx]
    dets = fit_detectors(f_fit, data.train.labels[inp.fit_idx], knn_k=cfg.knn_k)
    s_id = {name: d.score(f_id) for name, d in dets.items()}
    correct = f_id.logits.argmax(1) == y_id
    accepted = accepts(f_id.reliability, option.threshold)
    ood, s_ood = {}, {}
    for s in inp.ood_sets:
        f = _features(net, s.images, option, cfg.device)
        s_ood[s.name] = {name: d.score(f) for name, d in dets.items()}
        ood[s.name] = {
            name: {
                **metrics.ood_metrics(s_id[name], s_ood[s.name][name]),
                "roc": metrics.roc_points(s_id[name], s_ood[s.name][name], 60),
            }
            for name in dets
        }
        ood[s.name]["accept_rate_at_threshold"] = float(np.mean(accepts(f.reliability, option.threshold)))
    calib = {
        "n": int(len(y_id)),
        "acc": float(correct.mean()),
        "ece_max_softmax": metrics.ece(np.exp(log_max_softmax(f_id.logits)[0]), correct),
        "ece_reliability": metrics.ece(f_id.reliability, correct),
        "threshold": option.threshold,
        **accept_summary(correct, accepted),
    }
    entry = {
        "ood": ood,
        "misclassification": {name: metrics.selective_metrics(s_id[name], correct, 50) for name in dets},
        "calibration": calib,
    }
    arrays = {
        "scores_id": s_id,
        "reliability_id": f_id.reliability,
        "z_id": f_id.z,
        "y_id": y_id,
        "reliability_ood": {k: v.get("reliability") for k, v in s_ood.items()},
        "correct": correct,
    }
    return entry, arrays


def evaluate_model(cfg: BenchConfig, run: ModelRun, inp: Inputs) -> tuple[dict, dict]:
    """All measurements of one run; returns ``(results entry, arrays for the plots)``."""
    t0 = time.perf_counter()
    net, train_cfg, _ = load_run(run.run_dir)
    net = net.to(cfg.device).eval()
    art_path, exported = ensure_artifact(run.run_dir, inp.data)
    art = load_artifact(art_path, providers="CPUExecutionProvider" if cfg.device == "cpu" else "auto")
    option = served_option(art, cfg.device)
    options = [option]
    if train_cfg.variant == "lin_pen":
        options.append(mahalanobis_option(net, inp.data, inp.fit_idx, cfg.device))
    t_load = time.perf_counter() - t0
    adv, ood_entry, arrays, parity, t_ood = measure(cfg, net, art, options, inp, run.label)
    geometry = geometry_summary(run.run_dir)
    entry = {
        "label": run.label,
        "variant": train_cfg.variant,
        "seed": train_cfg.seed,
        "run_dir": relative_path(str(run.run_dir)),
        "run_status": run.status,
        "train_config": train_cfg.to_dict(),
        "artifact": {
            "path": relative_path(str(art_path)),
            "exported_now": exported,
            "score": art.score_name,
            "threshold": art.threshold,
            "target_accept_rate": art.target_accept_rate,
            "checksum": art.metadata.get("checksum"),
            "code_version": art.metadata.get("code_version"),
            "parity_with_torch": parity,
        },
        "reject_options": {o.name: {"threshold": o.threshold, "served": o is option} for o in options},
        "test_acc": geometry.get("test_acc"),
        "geometry": geometry,
        "adversarial": adv,
        **ood_entry,
        "seconds": {
            "load_export": round(t_load, 2),
            "adversarial": adv["seconds"],
            "ccat": adv["ccat_seconds"],
            "ood": t_ood,
        },
    }
    return entry, arrays


def ccat_all(cfg: BenchConfig, net, options: list[RejectOption], inp: Inputs, x, y, adv: dict) -> dict:
    """:func:`robustness.ccat.ccat_figures` of every option at the headline ε, on the expensive tier's points."""
    n = adv["n"]["expensive"]
    eps = {norm: cfg.adversarial.headline(norm) for norm in ("linf", "l2")}
    out, val = {}, validation_features(net, inp.data.val.images, cfg.device)
    for o in options:
        by = adv["headline"].get("reject", {}).get(o.name, {})
        norms = {k: v for k, v in eps.items() if k in by}
        broken = {k: ~np.asarray(by[k]["robust_points"], bool) for k in norms}
        out[o.name] = ccat_figures(
            net,
            o,
            val,
            inp.data.val.labels,
            x[:n],
            y[:n],
            broken,
            norms,
            cfg.adversarial.adaptive,
            cfg.seed,
            cfg.device,
        )
    return out


def measure(
    cfg: BenchConfig,
    net,
    art: Artifact,
    options: list[RejectOption],
    inp: Inputs,
    label: str,
) -> tuple[dict, dict, dict, dict, float]:
    """The measurements every model gets (``options[0]`` is the served one): artifact parity, the adversarial
    evaluation with CCAT's figures, OOD and selective classification. Returns ``(adversarial, ood entry, arrays,
    parity, OOD seconds)``."""
    option = options[0]
    parity = _parity(net, art, option, inp.data.test.images[inp.id_idx[:256]], cfg.device)
    x, y = inp.x_adv.to(cfg.device), inp.y_adv.to(cfg.device)
    adv = evaluate_adversarial(
        net,
        x,
        y,
        cfg.adversarial,
        options,
        blackbox=lambda a: art.run(a)["logits"],
        seed=cfg.seed,
        progress=cfg.progress,
        label=label,
    )
    adv["paper_deepfool"] = paper_deepfool(net, x[: cfg.adversarial.n_expensive])
    if inp.adv_idx is not None:
        adv["points"] = [int(i) for i in inp.adv_idx]
    t = time.perf_counter()
    adv["ccat"] = ccat_all(cfg, net, options, inp, x, y, adv)
    adv["ccat_seconds"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    ood_entry, arrays = ood_and_selective(cfg, net, inp, option)
    realized = realized_guarantee(
        art.acceptance, arrays["reliability_id"] >= option.threshold, arrays["correct"]
    )
    if (
        realized is not None
    ):  # the artifact certifies a selective error: what it realizes on the ID test points
        ood_entry["guarantee"] = realized
    return adv, ood_entry, arrays, parity, round(time.perf_counter() - t, 2)
