"""Classifiers trained elsewhere in the bench (``--model PKG.MODULE:FACTORY --weights FILE [--feature-layer NAME]``).

Each outside model is loaded by :func:`training.outside.load_outside` (its feature layer read by a forward hook)
and measured like a project run (:func:`robustness.evaluate.measure`), on the same points: the attack ensemble and
the sanity flags, OOD detection with every post-hoc detector, and each detector as a reject option under the
adaptive attack — max-softmax, energy, Mahalanobis and KNN (:mod:`training.posthoc`), each fitted on the bench's
fit points, its threshold calibrated to accept 95% of the validation split, and each exported with the model to an
ONNX graph that confirms every adaptive success. The served option (the first) is the Mahalanobis score of the
artifact :func:`training.outside_export.export_outside` writes into ``OUT/outside/LABEL/model.onnx`` (what
``bentoml serve`` would serve). One more sanity flag: the forward pass must be deterministic in eval mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from robustness import sanity
from robustness.config import BenchConfig, relative_path
from robustness.evaluate import Inputs, measure, served_option
from robustness.reject_option import RejectOption, graph_confirm
from serving.artifact import load_artifact
from serving.artifact_format import INPUT_NAME, OUTPUT_NAMES
from training.calibration import calibrate_threshold
from training.config import TrainConfig
from training.data import load_dataset
from training.inference import forward_batches
from training.onnx_graph import to_onnx
from training.outside import FeatureModel, load_outside
from training.outside_export import POSTHOC_SCORE, describe_layer, export_outside
from training.posthoc import DETECTOR_SCORES, FeatureScored, fit_detector_score

TARGET_ACCEPT_RATE = 0.95


@dataclass(frozen=True)
class OutsideModel:
    """One ``--model``: its factory, weights, feature layer and the data split the bench measures it on."""

    label: str
    spec: str
    weights: str
    feature_layer: str | None
    config: TrainConfig  # dataset, data_dir, val_fraction and split seed (shared with the project's runs)
    status: str = "outside"


def shared_split(cfg: BenchConfig, runs: list) -> tuple[TrainConfig, object]:
    """The config and data whose split the bench's outside models share: the first project run's, else
    ``--dataset``'s with the first ``--seeds`` seed (``--data-dir`` wins either way)."""
    base = (
        runs[0].config if runs else TrainConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seeds[0])
    )
    base = replace(base, data_dir=cfg.data_dir or base.data_dir)
    return base, load_dataset(base.dataset, base.data_dir, base.val_fraction, base.seed)


def unique_label(label: str, taken: set[str]) -> str:
    """``label``, with ``_2`` appended until no other model of the bench has it; recorded in ``taken``."""
    while label in taken:
        label += "_2"
    taken.add(label)
    return label


def outside_models(cfg: BenchConfig, runs: list) -> list[OutsideModel]:
    """The bench's ``--model`` entries, each loaded once here so a bad factory stops the bench before any work
    (:class:`training.outside.OutsideModelError`: ``error: ...``, exit status 2). Their data split is the first
    project run's, so the detectors see the same fit and validation points."""
    if not cfg.models:
        return []
    base, data = shared_split(cfg, runs)
    out, taken = [], {r.label for r in runs}
    for spec, weights, layer in zip(cfg.models, cfg.weights, cfg.feature_layers, strict=True):
        load_outside(spec, weights, data.input_shape, data.num_classes, layer or None)
        label = unique_label(spec.split(":")[0].rsplit(".", 1)[-1], taken)
        out.append(OutsideModel(label, spec, weights, layer or None, base))
    return out


def ort_graph(scored: FeatureScored, input_shape: tuple[int, int, int]):
    """``scored`` exported to ONNX (the export's :func:`training.onnx_graph.to_onnx`) as a numpy function."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(
        to_onnx(scored, input_shape).SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )

    def run(pixels: np.ndarray) -> dict:
        outs = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(pixels, dtype=np.float32)})
        return dict(zip(OUTPUT_NAMES, outs, strict=True))

    return run


def detector_options(
    net: FeatureModel, data, fit_idx: np.ndarray, knn_k: int, device: str, names: tuple[str, ...]
) -> list[RejectOption]:
    """Each detector of ``names`` as a reject option: its score module, a threshold accepting 95% of the validation
    split, and the ONNX graph of model + score module confirming every adaptive success."""
    lf, zf = forward_batches(net, data.train.images[fit_idx], 512, device)
    lv, zv = forward_batches(net, data.val.images, 512, device)
    options = []
    for name in names:
        score = fit_detector_score(name, zf, lf, data.train.labels[fit_idx], lv, zv, data.num_classes, knn_k)
        score = score.to(device).eval()
        with torch.no_grad():
            rel = (
                score(torch.from_numpy(lv).to(device), torch.from_numpy(zv).to(device))
                .reliability.cpu()
                .numpy()
            )
        threshold = float(calibrate_threshold(rel, TARGET_ACCEPT_RATE))
        graph = ort_graph(FeatureScored(net, score).eval(), data.input_shape)
        options.append(RejectOption(name, score, threshold, graph_confirm(graph, threshold), graph))
    return options


def determinism_flag(net: FeatureModel, x: torch.Tensor) -> sanity.Flag:
    """A model whose eval-mode forward pass is random (noise layers, dropout left on) cannot be scored by
    gradient attacks: two passes over the same inputs must agree."""
    with torch.no_grad():
        a, b = net(x)[0], net(x)[0]
    diff = float((a - b).abs().max()) if len(x) else 0.0
    return sanity.Flag(
        "deterministic_forward",
        diff <= 1e-5 * max(1.0, float(a.abs().max()) if len(x) else 1.0),
        f"max |logit difference| of two eval-mode passes over {len(x)} points: {diff:.3g}",
        {"max_abs_diff": diff},
    )


def evaluate_outside(cfg: BenchConfig, model: OutsideModel, inp: Inputs) -> tuple[dict, dict]:
    """All measurements of one outside model; returns ``(results entry, arrays for the plots)``."""
    t0 = time.perf_counter()
    data = inp.data
    net = load_outside(
        model.spec, model.weights, data.input_shape, data.num_classes, model.feature_layer, cfg.device
    )
    art_path = Path(cfg.out) / "outside" / model.label / "model.onnx"
    export_outside(
        model.spec, model.weights, data, art_path, model.feature_layer, TARGET_ACCEPT_RATE, model=net
    )
    art = load_artifact(art_path, providers="CPUExecutionProvider" if cfg.device == "cpu" else "auto")
    served = served_option(art, cfg.device)
    served = replace(served, name=POSTHOC_SCORE)
    others = detector_options(
        net, data, inp.fit_idx, cfg.knn_k, cfg.device, tuple(d for d in DETECTOR_SCORES if d != POSTHOC_SCORE)
    )
    options = [served, *others]
    t_load = time.perf_counter() - t0
    adv, ood_entry, arrays, parity, t_ood = measure(cfg, net, art, options, inp, model.label)
    adv["flags"].append(determinism_flag(net, inp.x_adv[:64].to(cfg.device)).to_dict())
    test_logits, _ = forward_batches(net, data.test.images, 512, cfg.device)
    test_acc = float((test_logits.argmax(1) == data.test.labels).mean())
    entry = {
        "label": model.label,
        "variant": model.label,
        "seed": model.config.seed,
        "run_dir": None,
        "run_status": model.status,
        "outside": {
            "model": model.spec,
            "weights": relative_path(model.weights),
            "feature_layer": describe_layer(net),
            "feature_dim": int(arrays["z_id"].shape[1]),
        },
        "train_config": {
            "dataset": data.name,
            "split_seed": model.config.seed,
            "val_fraction": model.config.val_fraction,
        },
        "artifact": {
            "path": relative_path(str(art_path)),
            "exported_now": True,
            "score": art.score_name,
            "posthoc_score": POSTHOC_SCORE,
            "threshold": art.threshold,
            "target_accept_rate": art.target_accept_rate,
            "checksum": art.metadata.get("checksum"),
            "code_version": art.metadata.get("code_version"),
            "parity_with_torch": parity,
        },
        "reject_options": {o.name: {"threshold": o.threshold, "served": o is served} for o in options},
        "test_acc": test_acc,
        "geometry": {"latent_width": int(arrays["z_id"].shape[1])},
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
