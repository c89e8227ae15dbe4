"""Classifiers given only as an ONNX graph (``--onnx FILE``): black-box robustness and OOD detection from the logits.

Nothing but the graph's outputs is used (no gradient, no feature layer), so every robustness figure here is an
**upper bound**: a white-box attack could only lower it. The report says so beside every such figure.

* **Attacks** (on the bench's points, seeded per model): Square (torchattacks: score-based random search, margin
  loss; L∞ at the plan's ensemble ε, L2 at the headline ε) and HopSkipJump (Foolbox: decision-based, L2, minimum
  norm, so one run gives every ε of the grid). Every success is recomputed from the graph's logits, inside the ε-ball
  and the box.
* **Reject options from the logits**: max-softmax, energy and max-logit (:mod:`robustness.ood`'s detectors), each
  thresholded to accept 95% of the validation split. Each is attacked on the *defended decision*: a success is a
  point predicted as another class **and** accepted. The attacks query the graph's logits with one more entry, the
  reject entry ``max(logits) - (score - threshold)``, so "class ``t`` wins" means "predicted ``t`` and accepted";
  Square runs targeted at every wrong class in turn (ordered by the clean logits, on the points still unbroken),
  HopSkipJump starts from the nearest ID point that is already another class and accepted.
* **OOD detection** with the same three scores on the bench's ID points and OOD sets, AUROC with a bootstrap
  interval.
* **Sanity flags**: the forward pass is deterministic; Square at the large L∞ ε breaks (almost) every point, so the
  attack does reach the model through the graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from robustness import sanity
from robustness.adversarial import AdversarialPlan
from robustness.attacks import AttackBudget
from robustness.config import BenchConfig, relative_path
from robustness.onnx_attacks import LogitOption, Logits, hsj_min_norms, square_all_targets, square_untargeted
from robustness.onnx_model import OnnxSpec, predictor, read_onnx
from robustness.ood import Detector, EnergyDetector, Features, MaxLogitDetector, MaxSoftmaxDetector, ood_table
from robustness.outside import shared_split, unique_label
from robustness.stats import proportion_of
from training.calibration import calibrate_threshold
from training.config import TrainConfig

TARGET_ACCEPT_RATE = 0.95
DETECTORS: dict[str, Callable[[], Detector]] = {
    "max_softmax": MaxSoftmaxDetector,
    "energy": EnergyDetector,
    "max_logit": MaxLogitDetector,
}
OOD_BOOTSTRAP = 200


@dataclass(frozen=True)
class OnnxModel:
    """One ``--onnx`` graph and the data split it is measured on (shared with the bench's other models)."""

    label: str
    spec: OnnxSpec
    config: TrainConfig
    status: str = "onnx"


def onnx_models(cfg: BenchConfig, runs: list) -> list[OnnxModel]:
    """The bench's ``--onnx`` entries, each checked here (:class:`robustness.onnx_model.OnnxModelError`, one line,
    exit status 2, before any work). Their data split is the first other model's, else ``--dataset``'s."""
    if not cfg.onnx:
        return []
    base, data = shared_split(cfg, runs)
    out, taken = [], {r.label for r in runs}
    for path in cfg.onnx:
        spec = read_onnx(path, data.input_shape, data.num_classes, cfg.onnx_input_shape, cfg.onnx_output)
        out.append(
            OnnxModel(
                unique_label(Path(path).stem, taken), replace(spec, path=relative_path(spec.path)), base
            )
        )
    return out


def _robust(correct: np.ndarray, broken: np.ndarray, eps: float) -> dict:
    return {**proportion_of(correct & ~broken), "eps": eps, "upper_bound": True}


def logit_options(fn: Logits, val_images: np.ndarray) -> list[LogitOption]:
    """max-softmax, energy and max-logit, each thresholded to accept 95% of ``val_images``."""
    val_logits = fn(val_images)
    options = []
    for name, make in DETECTORS.items():
        det = make()
        options.append(
            LogitOption(
                name,
                det,
                float(calibrate_threshold(det.score(Features(val_logits, val_logits)), TARGET_ACCEPT_RATE)),
            )
        )
    return options


def determinism_flag(fn: Logits, x: np.ndarray) -> sanity.Flag:
    a, b = fn(x), fn(x)
    diff = float(np.abs(a - b).max()) if len(x) else 0.0
    return sanity.Flag(
        "deterministic_forward",
        diff <= 1e-5 * max(1.0, float(np.abs(a).max()) if len(x) else 1.0),
        f"max |logit difference| of two passes of the graph over {len(x)} points: {diff:.3g}",
        {"max_abs_diff": diff},
    )


def _pad(mask: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[: len(mask)] = mask
    return out


def _ood(cfg: BenchConfig, fn: Logits, inp, options: list[LogitOption], id_logits: np.ndarray) -> dict:
    s_id = {o.name: o.score(id_logits) for o in options}
    s_ood = {}
    for s in inp.ood_sets:
        logits = fn(to_float(s.images))
        s_ood[s.name] = {o.name: o.score(logits) for o in options}
    return ood_table(s_id, s_ood, n_boot=OOD_BOOTSTRAP, boot_seed=cfg.seed)


def to_float(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


@dataclass
class _Points:
    """The points one graph is attacked on, with what the graph outputs for them."""

    x: torch.Tensor  # the attacked points (the first ``n_bb`` also by HopSkipJump)
    y: torch.Tensor
    correct: np.ndarray  # the graph's prediction is the label
    n_bb: int
    id_logits: np.ndarray  # the ID test points' logits
    id_correct: np.ndarray
    pool_x: torch.Tensor  # HopSkipJump's starting points
    pool_logits: np.ndarray

    @property
    def n(self) -> int:
        return len(self.x)


def _id_points(fn: Logits, inp, x: torch.Tensor, y: torch.Tensor, correct: np.ndarray, n_bb: int) -> _Points:
    """The attacked points with the ID test points' logits; the first 512 of those start HopSkipJump."""
    data = inp.data
    id_logits = fn(to_float(data.test.images[inp.id_idx]))
    return _Points(
        x,
        y,
        correct,
        n_bb,
        id_logits,
        id_logits.argmax(1) == data.test.labels[inp.id_idx],
        torch.from_numpy(to_float(data.test.images[inp.id_idx[:512]])),
        id_logits[:512],
    )


def _square_runs(fn: Logits, pts: _Points, plan: AdversarialPlan, seed: int) -> tuple[dict, int]:
    """Untargeted Square at the ensemble's L∞ ε and the headline L2 ε: ``{"norm@eps": run}`` and the queries."""
    runs, queries = {}, 0
    for norm, grid in (("linf", plan.subset("linf", plan.ensemble_eps_linf)), ("l2", [plan.headline("l2")])):
        for e in grid:
            broken, q = square_untargeted(fn, pts.x, pts.y, norm, e, plan.budget.square_queries, seed)
            queries += q
            runs[f"{norm}@{e:g}"] = {"norm": norm, "eps": e, "n": pts.n, "queries": q, "broken": broken}
    return runs, queries


def _prediction_attacks(fn: Logits, pts: _Points, plan: AdversarialPlan, seed: int) -> tuple[dict, int]:
    """Square and HopSkipJump on the prediction: the entry's ``robust``, ``square`` and ``hopskipjump``, and the
    queries used."""
    square_runs, q_square = _square_runs(fn, pts, plan, seed)
    b, n, n_bb, correct = plan.budget, pts.n, pts.n_bb, pts.correct
    head_linf, head_l2 = plan.headline("linf"), plan.headline("l2")
    hsj, q = hsj_min_norms(fn, None, pts.x[:n_bb], pts.y[:n_bb], pts.pool_x, pts.pool_logits, b, seed)
    hsj_curve = {f"{e:g}": _robust(correct[:n_bb], hsj <= e, e) for e in plan.subset("l2", ())}
    robust = {
        "linf": _robust(correct, square_runs[f"linf@{head_linf:g}"]["broken"], head_linf)
        if f"linf@{head_linf:g}" in square_runs
        else None,
        "l2": _robust(correct, square_runs[f"l2@{head_l2:g}"]["broken"] | _pad(hsj <= head_l2, n), head_l2),
    }
    figures = {
        "robust": robust,
        "square": {
            k: {kk: vv for kk, vv in v.items() if kk != "broken"}
            | {"robust_acc": _robust(correct, v["broken"], v["eps"])}
            for k, v in square_runs.items()
        },
        "hopskipjump": {
            "n": n_bb,
            "median_min_l2": float(np.median(hsj)) if len(hsj) else None,
            "robust_acc": hsj_curve,
        },
    }
    return figures, q_square + q


def _reject_options(
    fn: Logits, options: list[LogitOption], pts: _Points, plan: AdversarialPlan, seed: int
) -> tuple[dict, int]:
    """Each reject option's ID acceptance and its robust & accepted figures at the headline ε; the queries used."""
    b, x, y, n_bb = plan.budget, pts.x, pts.y, pts.n_bb
    head_linf, head_l2 = plan.headline("linf"), plan.headline("l2")
    reject, queries = {}, 0
    for k, opt in enumerate(options):
        s = seed + 1000 * (k + 1)
        b_linf, q1 = square_all_targets(fn, opt, x, y, "linf", head_linf, b.square_queries, s)
        b_l2, q2 = square_all_targets(fn, opt, x, y, "l2", head_l2, b.square_queries, s + 500)
        h, q3 = hsj_min_norms(fn, opt, x[:n_bb], y[:n_bb], pts.pool_x, pts.pool_logits, b, s)
        queries += q1 + q2 + q3
        accepted = opt.score(pts.id_logits) >= opt.threshold
        reject[opt.name] = {
            "threshold": opt.threshold,
            "target_accept_rate": TARGET_ACCEPT_RATE,
            "id_accept_rate": float(accepted.mean()),
            "id_acc_accepted": float(pts.id_correct[accepted].mean()) if accepted.any() else None,
            "linf": _robust(pts.correct, b_linf, head_linf),
            "l2": _robust(pts.correct, b_l2 | _pad(h <= head_l2, pts.n), head_l2),
            "hsj_median_l2": float(np.median(h)) if len(h) else None,
        }
    return reject, queries


def _flags(fn: Logits, pts: _Points, plan: AdversarialPlan, seed: int) -> tuple[list[sanity.Flag], int]:
    """A deterministic forward pass, and Square at the large L∞ ε breaking (almost) every point; the queries used."""
    x, y, n_bb, correct = pts.x, pts.y, pts.n_bb, pts.correct
    large, q = square_untargeted(
        fn, x[:n_bb], y[:n_bb], "linf", plan.large_eps_linf, plan.budget.square_queries, seed
    )
    k_bb = max(int(correct[:n_bb].sum()), 1)
    flags = [
        determinism_flag(fn, x[:64].numpy()),
        sanity.large_eps(
            float((correct[:n_bb] & ~large).sum() / k_bb),
            plan.large_eps_linf,
            int(correct[:n_bb].sum()),
            plan.sanity,
        ),
    ]
    return flags, q


def _entry(
    model: OnnxModel, data, pts: _Points, budget: AttackBudget, test_acc: float, measured: dict
) -> dict:
    """The graph's entry of results.json; ``measured``: the figures that follow its ``budget``, in their order."""
    spec = model.spec
    head = {
        "label": model.label,
        "variant": "onnx",
        "access": "black-box",
        "upper_bounds": True,
        "seed": model.config.seed,
        "run_status": model.status,
        "onnx": {
            "path": spec.path,
            "sha256": spec.sha256,
            "input": spec.input_name,
            "output": spec.output_name,
            "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes,
        },
        "train_config": {
            "dataset": data.name,
            "split_seed": model.config.seed,
            "val_fraction": model.config.val_fraction,
        },
        "test_acc": test_acc,
        "n": pts.n,
        "n_blackbox": pts.n_bb,
        "clean_acc": proportion_of(pts.correct),
        "budget": {
            "square_queries": budget.square_queries,
            "hsj_steps": budget.hsj_steps,
            "hsj_initial_evals": budget.hsj_initial_evals,
            "hsj_max_evals": budget.hsj_max_evals,
        },
    }
    return head | measured


def evaluate_onnx(cfg: BenchConfig, model: OnnxModel, inp) -> tuple[dict, dict]:
    """Every black-box measurement of one ``--onnx`` graph on the bench's points; returns ``(entry, {})``."""
    t0 = time.perf_counter()
    data, plan, seed = inp.data, cfg.adversarial, cfg.seed
    fn = predictor(model.spec, cfg.threads)
    options = logit_options(fn, to_float(data.val.images))
    n, n_bb = min(plan.n_expensive, len(inp.x_adv)), min(plan.n_blackbox, len(inp.x_adv))
    x, y = inp.x_adv[:n].contiguous(), inp.y_adv[:n]
    correct = fn(x.numpy()).argmax(1) == y.numpy()
    t_attack = time.perf_counter()
    pts = _id_points(fn, inp, x, y, correct, n_bb)
    prediction, q_prediction = _prediction_attacks(fn, pts, plan, seed)
    reject, q_reject = _reject_options(fn, options, pts, plan, seed)
    flags, q_flags = _flags(fn, pts, plan, seed)
    t_ood = time.perf_counter()
    ood = _ood(cfg, fn, inp, options, pts.id_logits)
    test_acc = float((fn(to_float(data.test.images)).argmax(1) == data.test.labels).mean())
    measured = {
        **prediction,
        "reject": reject,
        "ood": ood,
        "flags": [f.to_dict() for f in flags],
        "queries": int(q_prediction + q_reject + q_flags),
        "seconds": {
            "attacks": round(t_ood - t_attack, 2),
            "ood": round(time.perf_counter() - t_ood, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    return _entry(model, data, pts, plan.budget, test_acc, measured), {}
