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

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
import torchattacks
from torch import nn

from robustness import sanity
from robustness.attacks import QueryCountingModel, lp_norms, seed_everything
from robustness.attacks.autoattack import TA_NORM
from robustness.config import BenchConfig, relative_path
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
Logits = Callable[[np.ndarray], np.ndarray]


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


@dataclass
class LogitOption:
    """A reject option computed from the logits alone: accept when ``detector.score >= threshold``."""

    name: str
    detector: Detector
    threshold: float

    def score(self, logits: np.ndarray) -> np.ndarray:
        return self.detector.score(Features(logits, logits))

    def defended(self, logits: np.ndarray) -> np.ndarray:
        """``(N, K + 1)``: the logits and the reject entry; its argmax is the class when accepted, ``K`` when not."""
        reject = logits.max(axis=1) - (self.score(logits) - self.threshold)
        return np.concatenate([logits, reject[:, None]], axis=1).astype(np.float32)

    def fooled(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (logits.argmax(axis=1) != y) & (self.score(logits) >= self.threshold)


class NumpyModule(nn.Module):
    """A torch view of a numpy ``pixels -> outputs`` function, without gradients: what Square queries."""

    def __init__(self, fn: Logits):
        super().__init__()
        self.fn = fn
        self.anchor = nn.Parameter(
            torch.zeros(1), requires_grad=False
        )  # torchattacks reads the device from it
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += len(x)
        return torch.from_numpy(np.asarray(self.fn(x.detach().cpu().numpy()), dtype=np.float32))


class AcceptedMisclassification(fb.criteria.Criterion):
    """Foolbox criterion: the output's argmax is neither the label nor, when given, the reject entry."""

    def __init__(self, labels: torch.Tensor, reject_index: int | None = None):
        self.labels, self.reject_index = labels, reject_index

    def __repr__(self) -> str:
        return f"AcceptedMisclassification(reject_index={self.reject_index})"

    def __call__(self, perturbed, outputs):
        outputs_, restore = ep.astensor_(outputs)
        pred = outputs_.argmax(axis=-1)
        adv = pred != ep.astensor(self.labels)
        if self.reject_index is not None:
            adv = adv.logical_and(pred != self.reject_index)
        return restore(adv)


def _inside(adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> np.ndarray:
    flat = adv.flatten(1)
    ok = (lp_norms(adv - x, norm) <= eps * (1 + 1e-5) + 1e-6) & (flat.amin(1) >= 0) & (flat.amax(1) <= 1)
    return ok.cpu().numpy()


def square(
    fn: Logits,
    x: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    queries: int,
    seed: int,
    targeted: bool = False,
) -> tuple[torch.Tensor, int]:
    """torchattacks' Square against ``fn``; ``labels`` are the targets when ``targeted``. Returns (adv, queries)."""
    net = NumpyModule(fn)
    atk = torchattacks.Square(
        net, norm=TA_NORM[norm], eps=eps, n_queries=queries, n_restarts=1, seed=seed, loss="margin"
    )
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
    seed_everything(seed)
    return atk(x, labels).detach(), net.queries


def wrong_classes(clean_logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N, K - 1)``: every class but the label, by clean logit, highest first."""
    order = np.argsort(-clean_logits, axis=1, kind="stable")
    return np.stack([row[row != label] for row, label in zip(order, y, strict=True)])


def square_untargeted(
    fn: Logits, x, y, norm: str, eps: float, queries: int, seed: int
) -> tuple[np.ndarray, int]:
    """Points Square misclassifies (inside the ball and the box)."""
    adv, q = square(fn, x, y, norm, eps, queries, seed)
    return (fn(adv.numpy()).argmax(1) != y.numpy()) & _inside(adv, x, norm, eps), q


def square_all_targets(
    fn: Logits, option: LogitOption, x, y, norm: str, eps: float, queries: int, seed: int
) -> tuple[np.ndarray, int]:
    """Points where targeted Square, at any wrong class, makes ``option`` accept a wrong prediction."""
    yn = y.numpy()
    clean = fn(x.numpy())
    broken = option.fooled(clean, yn)
    targets, used = wrong_classes(clean, yn), 0
    for r in range(targets.shape[1]):
        idx = np.flatnonzero(~broken)
        if not len(idx):
            break
        t = torch.from_numpy(targets[idx, r])
        adv, q = square(
            lambda p: option.defended(fn(p)), x[idx], t, norm, eps, queries, seed + r, targeted=True
        )
        used += q
        ok = option.fooled(fn(adv.numpy()), yn[idx]) & _inside(adv, x[idx], norm, eps)
        broken[idx[ok]] = True
    return broken, used


def hsj_min_norms(
    fn: Logits,
    option: LogitOption | None,
    x,
    y,
    pool_x: torch.Tensor,
    pool_logits: np.ndarray,
    budget,
    seed: int,
) -> tuple[np.ndarray, int]:
    """HopSkipJump's smallest L2 adversarial per point (``inf`` where none was found), on the prediction
    (``option=None``) or on the defended decision; it starts from the nearest pool point already fooled."""
    yn = y.numpy()
    out = fn if option is None else (lambda p: option.defended(fn(p)))
    fooled = [
        (
            (pool_logits.argmax(1) != label)
            if option is None
            else option.fooled(pool_logits, np.full(len(pool_logits), label))
        )
        for label in yn
    ]
    d = torch.cdist(x.flatten(1), pool_x.flatten(1)).numpy()
    d[~np.stack(fooled)] = np.inf
    has = np.isfinite(d.min(axis=1))
    norms = np.full(len(x), np.inf)
    fmodel = QueryCountingModel(out)
    idx = np.flatnonzero(has)
    if len(idx):
        seed_everything(seed)
        start = pool_x[d[idx].argmin(axis=1)]
        crit = AcceptedMisclassification(y[idx], None if option is None else pool_logits.shape[1])
        attack = fb.attacks.HopSkipJumpAttack(
            steps=budget.hsj_steps,
            initial_gradient_eval_steps=budget.hsj_initial_evals,
            max_gradient_eval_steps=budget.hsj_max_evals,
            constraint="l2",
        )
        raw = attack.run(fmodel, x[idx], crit, starting_points=start).detach()
        logits = fn(raw.numpy())
        ok = (logits.argmax(1) != yn[idx]) if option is None else option.fooled(logits, yn[idx])
        norms[idx] = np.where(ok, lp_norms(raw - x[idx], "l2").numpy(), np.inf)
    return norms, fmodel.queries


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


def evaluate_onnx(cfg: BenchConfig, model: OnnxModel, inp) -> tuple[dict, dict]:
    """Every black-box measurement of one ``--onnx`` graph on the bench's points; returns ``(entry, {})``."""
    t0 = time.perf_counter()
    data, plan = inp.data, cfg.adversarial
    b, seed = plan.budget, cfg.seed
    fn = predictor(model.spec, cfg.threads)
    options = logit_options(fn, to_float(data.val.images))
    n, n_bb = min(plan.n_expensive, len(inp.x_adv)), min(plan.n_blackbox, len(inp.x_adv))
    x, y = inp.x_adv[:n].contiguous(), inp.y_adv[:n]
    correct = fn(x.numpy()).argmax(1) == y.numpy()
    head_linf, head_l2 = plan.headline("linf"), plan.headline("l2")
    t_attack = time.perf_counter()
    square_runs, queries = {}, 0
    for norm, grid in (("linf", plan.subset("linf", plan.ensemble_eps_linf)), ("l2", [head_l2])):
        for e in grid:
            broken, q = square_untargeted(fn, x, y, norm, e, b.square_queries, seed)
            queries += q
            square_runs[f"{norm}@{e:g}"] = {"norm": norm, "eps": e, "n": n, "queries": q, "broken": broken}
    id_logits = fn(to_float(data.test.images[inp.id_idx]))
    id_correct = id_logits.argmax(1) == data.test.labels[inp.id_idx]
    pool_x = torch.from_numpy(to_float(data.test.images[inp.id_idx[:512]]))  # HopSkipJump's starting points
    pool_logits = id_logits[:512]
    hsj, q = hsj_min_norms(fn, None, x[:n_bb], y[:n_bb], pool_x, pool_logits, b, seed)
    queries += q
    l2_grid = plan.subset("l2", ())
    hsj_curve = {f"{e:g}": _robust(correct[:n_bb], hsj <= e, e) for e in l2_grid}
    robust = {
        "linf": _robust(correct, square_runs[f"linf@{head_linf:g}"]["broken"], head_linf)
        if f"linf@{head_linf:g}" in square_runs
        else None,
        "l2": _robust(correct, square_runs[f"l2@{head_l2:g}"]["broken"] | _pad(hsj <= head_l2, n), head_l2),
    }
    reject = {}
    for k, opt in enumerate(options):
        s = seed + 1000 * (k + 1)
        b_linf, q1 = square_all_targets(fn, opt, x, y, "linf", head_linf, b.square_queries, s)
        b_l2, q2 = square_all_targets(fn, opt, x, y, "l2", head_l2, b.square_queries, s + 500)
        h, q3 = hsj_min_norms(fn, opt, x[:n_bb], y[:n_bb], pool_x, pool_logits, b, s)
        queries += q1 + q2 + q3
        accepted = opt.score(id_logits) >= opt.threshold
        reject[opt.name] = {
            "threshold": opt.threshold,
            "target_accept_rate": TARGET_ACCEPT_RATE,
            "id_accept_rate": float(accepted.mean()),
            "id_acc_accepted": float(id_correct[accepted].mean()) if accepted.any() else None,
            "linf": _robust(correct, b_linf, head_linf),
            "l2": _robust(correct, b_l2 | _pad(h <= head_l2, n), head_l2),
            "hsj_median_l2": float(np.median(h)) if len(h) else None,
        }
    large, q = square_untargeted(fn, x[:n_bb], y[:n_bb], "linf", plan.large_eps_linf, b.square_queries, seed)
    queries += q
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
    t_ood = time.perf_counter()
    ood = _ood(cfg, fn, inp, options, id_logits)
    test_acc = float((fn(to_float(data.test.images)).argmax(1) == data.test.labels).mean())
    entry = {
        "label": model.label,
        "variant": "onnx",
        "access": "black-box",
        "upper_bounds": True,
        "seed": model.config.seed,
        "run_status": model.status,
        "onnx": {
            "path": model.spec.path,
            "sha256": model.spec.sha256,
            "input": model.spec.input_name,
            "output": model.spec.output_name,
            "input_shape": list(model.spec.input_shape),
            "num_classes": model.spec.num_classes,
        },
        "train_config": {
            "dataset": data.name,
            "split_seed": model.config.seed,
            "val_fraction": model.config.val_fraction,
        },
        "test_acc": test_acc,
        "n": n,
        "n_blackbox": n_bb,
        "clean_acc": proportion_of(correct),
        "budget": {
            "square_queries": b.square_queries,
            "hsj_steps": b.hsj_steps,
            "hsj_initial_evals": b.hsj_initial_evals,
            "hsj_max_evals": b.hsj_max_evals,
        },
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
        "reject": reject,
        "ood": ood,
        "flags": [f.to_dict() for f in flags],
        "queries": int(queries),
        "seconds": {
            "attacks": round(t_ood - t_attack, 2),
            "ood": round(time.perf_counter() - t_ood, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    return entry, {}
