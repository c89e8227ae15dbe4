"""Typed attack registry: every attack is called the same way and returns success masks shaped (len(eps), N).

``run_attack(spec, fmodel, x, y, epsilons, budget, seed)`` runs one registered attack on correctly classified
points ``x`` (float32 NCHW in [0, 1], torch) with labels ``y`` (int64) and returns an :class:`AttackOutcome`:

* ``success[k, i]`` — the attack found an adversarial for point ``i`` within ``epsilons[k]`` (Foolbox convention:
  the returned perturbation is clipped to ε and the clipped input re-checked);
* ``advs[k]`` — the clipped inputs (for the reject option: are the adversarials accepted by the reliability?);
* ``min_norm[i]`` — for minimum-norm attacks, the norm of the unclipped adversarial (``inf`` if none was found).

Fixed-ε attacks (FGSM, PGD) are rerun independently at every ε (so a non-monotone curve reveals a weak attack);
minimum-norm attacks (DeepFool, C&W, FMN, HopSkipJump) run once and are clipped per ε. The white-box model is a
``foolbox.PyTorchModel`` over :class:`training.models.LogitsOnly`; the black-box one wraps any numpy
``pixels -> logits`` function (the exported ONNX artifact in the bench) in :class:`QueryCountingModel`.

The reliability-aware adaptive attack (:func:`adaptive_reject_pgd`) and the ART APGD cross-check
(:func:`apgd_success`) live here too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["linf", "l2"]
Kind = Literal["fixed", "min_norm"]
Access = Literal["white", "black"]
Tier = Literal["cheap", "expensive", "blackbox"]


@dataclass(frozen=True)
class AttackBudget:
    """Iteration budgets of the attacks (the sample counts live in the bench plan)."""

    pgd_steps: int = 20
    pgd_restarts: int = 1
    deepfool_steps: int = 50
    deepfool_candidates: int = 10
    cw_binary_steps: int = 4
    cw_steps: int = 25
    cw_stepsize: float = 0.05
    cw_initial_const: float = 0.1
    fmn_steps: int = 50
    fmn_l2_max_stepsize: float = 0.1  # Foolbox's default 1.0 stalls at ~2x DeepFool's norm on (Fashion-)MNIST
    hsj_steps: int = 12
    hsj_initial_evals: int = 50
    hsj_max_evals: int = 200

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


def _margin_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ (max_{j≠y} l_j - l_y): the C&W logit margin (ascended by untargeted PGD)."""
    other = logits.clone()
    other[torch.arange(len(labels), device=labels.device), labels] = -torch.inf
    return (other.amax(dim=1) - logits.gather(1, labels[:, None]).squeeze(1)).sum()


class _EarlyStopPGD:
    """Foolbox PGD (same random start, normalisation, projection, step size) that stops per point.

    Points whose current iterate is already misclassified are frozen there and dropped from the batch, so the
    cost follows the points that still resist (success can only be >= Foolbox's final-iterate PGD; the adversarial
    is the first misclassified iterate, i.e. a low-confidence one). Falls back to Foolbox's own loop for
    non-torch inputs or targeted criteria.
    """

    loss_name = "ce"

    def _loss(self, logits, labels):
        return _margin_sum(logits, labels) if self.loss_name == "margin" else _ce_sum(logits, labels)

    def run(self, model, inputs, criterion, *, epsilon, **kwargs):
        from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds

        raise_if_kwargs(kwargs)
        x0e, restore_type = ep.astensor_(inputs)
        crit = get_criterion(criterion)
        if not isinstance(x0e, ep.PyTorchTensor) or type(crit) is not fb.criteria.Misclassification:
            if self.loss_name != "ce":
                raise ValueError("the margin-loss PGD needs torch inputs and an untargeted criterion")
            return super().run(model, inputs, criterion, epsilon=epsilon)
        verify_input_bounds(x0e, model)
        x0 = x0e.raw
        y = crit.labels.raw
        lo, hi = model.bounds
        stepsize = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * epsilon
        x = (self.get_random_start(x0e, epsilon).raw if self.random_start else x0.clone()).clamp(lo, hi).detach()
        active = torch.arange(len(x0), device=x0.device)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            xa = x[active].clone().requires_grad_(True)
            logits = model(xa)
            ya = y[active]
            keep = logits.argmax(1) == ya
            (grad,) = torch.autograd.grad(self._loss(logits, ya), xa)
            if not keep.any():
                break
            idx = active[keep]
            xk = ep.astensor(xa.detach()[keep])
            g = self.normalize(ep.astensor(grad[keep]), x=xk, bounds=model.bounds)
            xn = self.project(xk + stepsize * g, ep.astensor(x0[idx]), epsilon)
            x[idx] = ep.clip(xn, lo, hi).raw
            active = idx
        return restore_type(ep.astensor(x))


class LinfPGD(_EarlyStopPGD, fb.attacks.LinfPGD):
    """L∞ PGD with cross-entropy (Foolbox's), stopping per point at the first misclassified iterate."""


class MarginLinfPGD(_EarlyStopPGD, fb.attacks.LinfPGD):
    """L∞ PGD ascending the logit margin ``max_{j≠y} l_j - l_y`` (the C&W loss) instead of cross-entropy.

    Unlike cross-entropy its gradient does not vanish when the softmax saturates, so it is the natural partner of
    CE-PGD against very confident (large-logit) models.
    """

    loss_name = "margin"


class L2PGD(_EarlyStopPGD, fb.attacks.L2PGD):
    """L2 PGD with cross-entropy, stopping per point at the first misclassified iterate."""


class _ActiveDeepFool:
    """Foolbox DeepFool (logit-difference loss, same distances / perturbations / overshoot) with two speed-ups:
    one forward pass serves all candidate gradients, and converged points leave the batch."""

    def run(self, model, inputs, criterion, *, early_stop=None, **kwargs):
        from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds

        raise_if_kwargs(kwargs)
        x0e, restore_type = ep.astensor_(inputs)
        crit = get_criterion(criterion)
        if not isinstance(x0e, ep.PyTorchTensor) or type(crit) is not fb.criteria.Misclassification \
                or self.loss != "logits":
            return super().run(model, inputs, criterion, early_stop=early_stop)
        verify_input_bounds(x0e, model)
        lo, hi = model.bounds
        x0 = x0e.raw
        y = crit.labels.raw
        with torch.no_grad():
            logits0 = model(x0)
        n_cand = min(self.candidates or logits0.shape[1], logits0.shape[1])
        classes = logits0.argsort(dim=1, descending=True)[:, :n_cand]
        x = x0.clone()
        p_total = torch.zeros_like(x0)
        active = torch.arange(len(x0), device=x0.device)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            xa = x[active].clone().requires_grad_(True)
            logits = model(xa)
            keep = logits.argmax(1) == y[active]
            if not keep.any():
                break
            cls = classes[active]
            rows = torch.arange(len(active), device=x0.device)
            l0 = logits[rows, cls[:, 0]]
            losses, grads = [], []
            for k in range(1, n_cand):
                diff = logits[rows, cls[:, k]] - l0
                (g,) = torch.autograd.grad(diff.sum(), xa, retain_graph=k < n_cand - 1)
                losses.append(diff.detach())
                grads.append(g)
            losses_e = ep.astensor(torch.stack(losses, dim=1)[keep])
            grads_e = ep.astensor(torch.stack(grads, dim=1)[keep])
            dist = self.get_distances(losses_e, grads_e).raw
            best = dist.argmin(dim=1)
            r = torch.arange(len(best), device=x0.device)
            step = self.get_perturbations(ep.astensor(dist[r, best] + 1e-4), ep.astensor(grads_e.raw[r, best])).raw
            idx = active[keep]
            p_total[idx] += step
            x[idx] = (x0[idx] + (1.0 + self.overshoot) * p_total[idx]).clamp(lo, hi)
            active = idx
        return restore_type(ep.astensor(x))


class L2DeepFool(_ActiveDeepFool, fb.attacks.L2DeepFoolAttack):
    pass


class LinfDeepFool(_ActiveDeepFool, fb.attacks.LinfDeepFoolAttack):
    pass


def _pgd_stepsize(steps: int) -> float:
    """Madry et al.'s heuristic: total path 2.5 ε over the steps."""
    return 2.5 / max(steps, 1)


def _fgsm(b: AttackBudget) -> fb.Attack:
    return fb.attacks.FGSM(random_start=False)


def _pgd_linf(b: AttackBudget) -> fb.Attack:
    a = LinfPGD(steps=b.pgd_steps, rel_stepsize=_pgd_stepsize(b.pgd_steps), random_start=True)
    return a.repeat(b.pgd_restarts) if b.pgd_restarts > 1 else a


def _pgd_linf_margin(b: AttackBudget) -> fb.Attack:
    a = MarginLinfPGD(steps=b.pgd_steps, rel_stepsize=_pgd_stepsize(b.pgd_steps), random_start=True)
    return a.repeat(b.pgd_restarts) if b.pgd_restarts > 1 else a


def _pgd_l2(b: AttackBudget) -> fb.Attack:
    a = L2PGD(steps=b.pgd_steps, rel_stepsize=_pgd_stepsize(b.pgd_steps), random_start=True)
    return a.repeat(b.pgd_restarts) if b.pgd_restarts > 1 else a


def _deepfool_l2(b: AttackBudget) -> fb.Attack:
    return L2DeepFool(steps=b.deepfool_steps, candidates=b.deepfool_candidates)


def _deepfool_linf(b: AttackBudget) -> fb.Attack:
    return LinfDeepFool(steps=b.deepfool_steps, candidates=b.deepfool_candidates)


def _cw_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=b.cw_binary_steps, steps=b.cw_steps, stepsize=b.cw_stepsize,
        initial_const=b.cw_initial_const,
    )


def _fmn_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.L2FMNAttack(steps=b.fmn_steps, max_stepsize=b.fmn_l2_max_stepsize)


def _fmn_linf(b: AttackBudget) -> fb.Attack:
    return fb.attacks.LInfFMNAttack(steps=b.fmn_steps)


def _hsj_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.HopSkipJumpAttack(
        steps=b.hsj_steps, initial_gradient_eval_steps=b.hsj_initial_evals,
        max_gradient_eval_steps=b.hsj_max_evals, constraint="l2",
    )


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: how to build it from a budget and how to read its result."""

    name: str
    norm: Norm
    kind: Kind
    access: Access
    iterative: bool
    tier: Tier
    build: Callable[[AttackBudget], fb.Attack] = field(repr=False)
    description: str = ""


REGISTRY: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"attack {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


for _spec in (
    AttackSpec("fgsm", "linf", "fixed", "white", False, "cheap", _fgsm, "FGSM (single step, CE)"),
    AttackSpec("pgd_linf", "linf", "fixed", "white", True, "cheap", _pgd_linf, "L∞ PGD, CE loss, random start"),
    AttackSpec("pgd_linf_margin", "linf", "fixed", "white", True, "cheap", _pgd_linf_margin,
               "L∞ PGD, logit-margin (C&W) loss, random start"),
    AttackSpec("pgd_l2", "l2", "fixed", "white", True, "cheap", _pgd_l2, "L2 PGD, CE loss, random start"),
    AttackSpec("deepfool_l2", "l2", "min_norm", "white", True, "expensive", _deepfool_l2, "L2 DeepFool (logits)"),
    AttackSpec("deepfool_linf", "linf", "min_norm", "white", True, "expensive", _deepfool_linf,
               "L∞ DeepFool (logits)"),
    AttackSpec("cw_l2", "l2", "min_norm", "white", True, "expensive", _cw_l2, "L2 Carlini-Wagner, bounded budget"),
    AttackSpec("fmn_l2", "l2", "min_norm", "white", True, "expensive", _fmn_l2, "L2 fast minimum-norm"),
    AttackSpec("fmn_linf", "linf", "min_norm", "white", True, "expensive", _fmn_linf, "L∞ fast minimum-norm"),
    AttackSpec("hsj_l2", "l2", "min_norm", "black", True, "blackbox", _hsj_l2,
               "HopSkipJump (decision-based, L2) against the exported ONNX artifact"),
):
    register(_spec)

DEFAULT_ATTACKS = tuple(REGISTRY)


def get_spec(name: str) -> AttackSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- models
class QueryCountingModel(fb.Model):
    """A Foolbox model over a numpy ``pixels (N,C,H,W) float32 -> logits (N,K)`` function; counts queries.

    Works with torch or numpy inputs (the output has the input's tensor type), so decision-based attacks can run
    against an ONNX Runtime session without any gradient.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], bounds: tuple[float, float] = (0.0, 1.0)):
        self._predict = predict
        self._bounds = fb.types.Bounds(*bounds)
        self.queries = 0

    @property
    def bounds(self) -> fb.types.Bounds:
        return self._bounds

    def __call__(self, inputs):
        x, restore_type = ep.astensor_(inputs)
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        self.queries += len(arr)
        return restore_type(ep.from_numpy(x, np.asarray(self._predict(arr), dtype=np.float32)))


class _LogitsOf(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


def white_box(net: nn.Module) -> fb.PyTorchModel:
    """Foolbox model over a network returning ``(logits, z)`` or logits."""
    device = next(iter(net.parameters()), torch.zeros(0)).device
    return fb.PyTorchModel(_LogitsOf(net).eval(), bounds=(0.0, 1.0), device=device)


# --------------------------------------------------------------------------- running one attack
@dataclass
class AttackOutcome:
    name: str
    epsilons: list[float]
    success: np.ndarray  # (len(eps), N) bool
    advs: list[torch.Tensor] | None  # clipped adversarials per ε (None when not kept)
    min_norm: np.ndarray | None  # (N,) for minimum-norm attacks
    seconds: float
    queries: int | None = None


def lp_norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def run_attack(
    spec: AttackSpec, fmodel: fb.Model, x: torch.Tensor, y: torch.Tensor, epsilons: list[float],
    budget: AttackBudget, seed: int = 0, keep_advs: bool = True,
) -> AttackOutcome:
    """Run ``spec`` on (x, y) at every ε; returns success masks (len(eps), N) and the clipped adversarials."""
    eps = [float(e) for e in epsilons]
    n = len(x)
    t0 = time.perf_counter()
    if n == 0:
        return AttackOutcome(spec.name, eps, np.zeros((len(eps), 0), bool), [x[:0]] * len(eps) if keep_advs else None,
                             np.zeros(0) if spec.kind == "min_norm" else None, 0.0, 0)
    seed_everything(seed)
    attack = spec.build(budget)
    q0 = getattr(fmodel, "queries", None)
    if spec.kind == "fixed":
        success = np.zeros((len(eps), n), dtype=bool)
        advs: list[torch.Tensor] = []
        for k, e in enumerate(eps):
            if e <= 0:
                advs.append(x.clone())
                continue
            _, clipped, ok = attack(fmodel, x, y, epsilons=e)
            success[k] = ok.cpu().numpy()
            advs.append(clipped.detach())
        min_norm = None
    elif spec.access == "black":
        success, advs, min_norm = _run_decision_based(attack, spec, fmodel, x, y, eps)
    else:
        raw, clipped, ok = attack(fmodel, x, y, epsilons=[None, *eps])
        raw_x = raw[0].detach()
        ok = ok.cpu().numpy().astype(bool)
        raw_ok = ok[0]
        success = ok[1:]
        advs = [c.detach() for c in clipped[1:]]
        norms = lp_norms(raw_x - x, spec.norm).cpu().numpy().astype(np.float64)
        min_norm = np.where(raw_ok, norms, np.inf)
    queries = None if q0 is None else int(fmodel.queries - q0)
    return AttackOutcome(spec.name, eps, success, advs if keep_advs else None, min_norm,
                         time.perf_counter() - t0, queries)


def starting_points(fmodel: fb.Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """For each point the nearest (L2) other input of the batch that the model does not label ``y``.

    Decision-based attacks need an adversarial to start from; Foolbox's default (blended uniform noise) fails on
    models that call noise a class, and then HopSkipJump raises for the whole batch. Returns the starting points
    and a mask of the points that have one.
    """
    with torch.no_grad():
        pred = fmodel(x).argmax(1)
    d = torch.cdist(x.flatten(1), x.flatten(1))
    d[pred[None, :] == y[:, None]] = torch.inf  # candidates must not be classified as the point's label
    best = d.argmin(dim=1)
    has = torch.isfinite(d[torch.arange(len(x)), best])
    return x[best].clone(), has.cpu().numpy()


def _run_decision_based(attack, spec: AttackSpec, fmodel, x, y, eps):
    start, has = starting_points(fmodel, x, y)
    success = np.zeros((len(eps), len(x)), dtype=bool)
    advs = [x.clone() for _ in eps]
    min_norm = np.full(len(x), np.inf)
    idx = torch.as_tensor(np.flatnonzero(has), device=x.device, dtype=torch.long)
    if len(idx):
        raw, clipped, ok = attack(fmodel, x[idx], y[idx], epsilons=[None, *eps], starting_points=start[idx])
        ok = ok.cpu().numpy().astype(bool)
        rows = idx.cpu().numpy()
        success[:, rows] = ok[1:]
        for k, c in enumerate(clipped[1:]):
            advs[k][idx] = c.detach()
        norms = lp_norms(raw[0].detach() - x[idx], spec.norm).cpu().numpy().astype(np.float64)
        min_norm[rows] = np.where(ok[0], norms, np.inf)
    return success, advs, min_norm


# --------------------------------------------------------------------------- reliability (differentiable)
class Reliability:
    """The artifact's score as a differentiable torch function of ``(logits, z)``; higher = more reliable.

    ``score(logits, z)`` is the served reliability (as-if the prediction is argmax); ``neg_log_for(logits, z, t)``
    is -log of the reliability the input would get if it were classified as ``t`` (what an adaptive attacker
    minimises to make a wrong prediction ``t`` accepted). ``threshold``: accepted = score >= threshold.
    """

    name = "reliability"

    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def score(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def neg_log_for(self, logits: torch.Tensor, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def accepted(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(logits, z) >= self.threshold


class SoftmaxReliability(Reliability):
    """Baselines: reliability = maximum softmax probability."""

    name = "max_softmax"

    def score(self, logits, z):
        return torch.softmax(logits.float(), dim=1).amax(dim=1)

    def neg_log_for(self, logits, z, target):
        return F.cross_entropy(logits.float(), target, reduction="none")


class VertexReliability(Reliability):
    """bin_enc: reliability = exp(-dist_class_centre) (training.reliability): ``u = (z - threshold) / half_edge``,
    ``dist_class_centre = sqrt(|(u - c_pred) W|² / d)`` with the class centres ``c`` and whitening ``W`` of the artifact."""

    name = "vertex_distance"

    def __init__(self, threshold: float, t: np.ndarray, a: np.ndarray, centres: np.ndarray, whiten: np.ndarray):
        super().__init__(threshold)
        self.t = torch.as_tensor(np.asarray(t, np.float32))
        self.a = torch.as_tensor(np.asarray(a, np.float32))
        self.centres = torch.as_tensor(np.asarray(centres, np.float32))
        self.whiten = torch.as_tensor(np.asarray(whiten, np.float32))

    def to(self, device) -> VertexReliability:
        self.t, self.a = self.t.to(device), self.a.to(device)
        self.centres, self.whiten = self.centres.to(device), self.whiten.to(device)
        return self

    def dist_to(self, z: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        dev = z.device
        u = (z.float() - self.t.to(dev)) / self.a.to(dev)
        w = (u - self.centres.to(dev)[cls]) @ self.whiten.to(dev)
        return torch.sqrt((w**2).mean(dim=1))

    def score(self, logits, z):
        return torch.exp(-self.dist_to(z, logits.argmax(dim=1)))

    def neg_log_for(self, logits, z, target):
        return self.dist_to(z, target)


def reliability_from_metadata(metadata: dict, threshold: float | None = None) -> Reliability:
    """The reliability of an artifact (``serving.artifact.Artifact.metadata``) as a torch function."""
    th = float(metadata["threshold"] if threshold is None else threshold)
    if metadata["score"]["name"] == "vertex_distance":
        from training.reliability import VertexGeometry

        geo = VertexGeometry.from_metadata(metadata)
        return VertexReliability(th, geo.threshold, geo.half_edge, geo.centres, geo.whiten)
    return SoftmaxReliability(th)


def logits_and_z(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` as ``(logits, z)``; a logits-only network gets ``z = logits``."""
    out = net(x)
    return out if isinstance(out, tuple) else (out, out)


@torch.no_grad()
def forward_all(net: nn.Module, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    logits, zs = [], []
    for i in range(0, len(x), batch_size):
        lo, z = logits_and_z(net, x[i : i + batch_size])
        logits.append(lo)
        zs.append(z)
    if not logits:
        return x.new_zeros((0, 1)), x.new_zeros((0, 1))
    return torch.cat(logits), torch.cat(zs)


@torch.no_grad()
def accepted_mask(net: nn.Module, reliability: Reliability, advs: list[torch.Tensor]) -> np.ndarray:
    """(len(eps), N): is each (clipped) adversarial accepted by the reliability threshold?"""
    out = []
    for a in advs:
        logits, z = forward_all(net, a)
        out.append(reliability.accepted(logits, z).cpu().numpy() if len(a) else np.zeros(0, bool))
    return np.stack(out) if out else np.zeros((0, 0), bool)


# --------------------------------------------------------------------------- adaptive attack
def adaptive_reject_pgd(
    net: nn.Module, reliability: Reliability, x: torch.Tensor, y: torch.Tensor, epsilons: list[float],
    steps: int = 10, n_targets: int = 2, lam: float = 1.0, seed: int = 0, batch_size: int = 256,
) -> np.ndarray:
    """Reliability-aware L∞ PGD: success = misclassified AND accepted (reliability >= threshold).

    For each of the ``n_targets`` most likely wrong classes t (by clean logits) it minimises
    ``clamp(max_{j≠t} l_j - l_t, min=0) + lam * (-log reliability_as_if_t)`` — for bin_enc the second term is the
    scaled distance of z to t's hypercube vertex, for max-softmax it is -log p_t — with sign steps of size
    2.5 ε / steps from a random start, and counts a point as broken if ANY iterate (all inside the ε-ball) is a
    wrong prediction that the threshold accepts. ε values are processed in increasing order and a point broken at
    a smaller ε stays broken (its adversarial is valid for every larger ε). Returns (len(eps), N) bool.
    """
    seed_everything(seed)
    net.eval()
    eps_order = np.argsort(epsilons)
    n = len(x)
    broken = np.zeros((len(epsilons), n), dtype=bool)
    if n == 0:
        return broken
    with torch.no_grad():
        logits0, _ = forward_all(net, x)
    masked = logits0.clone()
    masked[torch.arange(n), y] = -torch.inf
    targets = masked.topk(min(n_targets, logits0.shape[1] - 1), dim=1).indices  # (N, T)
    done = np.zeros(n, dtype=bool)
    for k in eps_order:
        eps = float(epsilons[k])
        if eps <= 0:
            broken[k] = done
            continue
        todo = np.flatnonzero(~done)
        step = _pgd_stepsize(steps) * eps
        for ti in range(targets.shape[1]):
            for s in range(0, len(todo), batch_size):
                idx = todo[s : s + batch_size]
                idx = idx[~done[idx]]
                if len(idx) == 0:
                    continue
                it = torch.as_tensor(idx, device=x.device)
                x0, yy, tt = x[it], y[it], targets[it, ti]
                xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
                hit = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
                act = torch.arange(len(idx), device=x.device)  # points not yet broken (frozen once broken)
                for step_i in range(steps + 1):
                    xs = xa[act].clone().requires_grad_(True)
                    logits, z = logits_and_z(net, xs)
                    with torch.no_grad():
                        ok = (logits.argmax(1) != yy[act]) & reliability.accepted(logits, z)
                    hit[act[ok]] = True
                    if step_i == steps or ok.all():
                        break
                    ts = tt[act]
                    rows = torch.arange(len(act), device=x.device)
                    other = logits.clone()
                    other[rows, ts] = -torch.inf
                    margin = (other.amax(dim=1) - logits[rows, ts]).clamp(min=0)
                    loss = (margin + lam * reliability.neg_log_for(logits, z, ts)).sum()
                    (grad,) = torch.autograd.grad(loss, xs)
                    with torch.no_grad():
                        keep = ~ok
                        a = act[keep]
                        xn = xs.detach()[keep] - step * grad[keep].sign()
                        x0a = x0[a]
                        xa[a] = torch.minimum(torch.maximum(xn, x0a - eps), x0a + eps).clamp(0, 1)
                        act = a
                done[idx[hit.cpu().numpy()]] = True
        broken[k] = done
    return broken


# --------------------------------------------------------------------------- diagnostics
def input_gradient_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """L2 norms of d CE / dx and d margin / dx at the clean points (zero -> gradient masking / saturation)."""
    ce_n, mg_n = [], []
    net.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].clone().requires_grad_(True)
        yb = y[i : i + batch_size]
        out = net(xb)
        logits = out[0] if isinstance(out, tuple) else out
        ce = F.cross_entropy(logits, yb, reduction="sum")
        (g,) = torch.autograd.grad(ce, xb, retain_graph=True)
        ce_n.append(g.flatten(1).norm(dim=1).detach().cpu())
        other = logits.clone()
        other[torch.arange(len(yb)), yb] = -torch.inf
        margin = (other.amax(dim=1) - logits[torch.arange(len(yb)), yb]).sum()
        (g2,) = torch.autograd.grad(margin, xb)
        mg_n.append(g2.flatten(1).norm(dim=1).detach().cpu())
    ce_all = torch.cat(ce_n).numpy() if ce_n else np.zeros(0)
    mg_all = torch.cat(mg_n).numpy() if mg_n else np.zeros(0)
    return {"ce": ce_all, "margin": mg_all}


def apgd_success(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float], steps: int = 20,
    loss_type: str = "cross_entropy", seed: int = 0, batch_size: int = 128, norm: Norm = "linf",
) -> np.ndarray:
    """ART's AutoProjectedGradientDescent (APGD-CE or APGD-DLR) success masks (len(eps), N): the cross-check."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    n = len(x)
    out = np.zeros((len(epsilons), n), dtype=bool)
    if n == 0:
        return out
    logits_net = _LogitsOf(net).eval()
    device = "gpu" if x.is_cuda else "cpu"
    with torch.no_grad():
        n_classes = int(logits_net(x[:1]).shape[1])
    clf = PyTorchClassifier(
        logits_net, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=n_classes,
        clip_values=(0.0, 1.0), device_type=device,
    )
    xs = x.detach().cpu().numpy()
    ys = y.detach().cpu().numpy()
    for k, eps in enumerate(epsilons):
        if eps <= 0:
            continue
        seed_everything(seed)
        attack = AutoProjectedGradientDescent(
            clf, norm=np.inf if norm == "linf" else 2, eps=float(eps), eps_step=2 * float(eps) / 10 if norm == "linf"
            else float(eps) / 5, max_iter=steps, nb_random_init=1, batch_size=batch_size, loss_type=loss_type,
            verbose=False,
        )
        xa = attack.generate(xs, y=ys)
        delta = np.abs(xa - xs).reshape(n, -1)
        size = delta.max(axis=1) if norm == "linf" else np.sqrt((delta**2).sum(axis=1))
        pred = clf.predict(xa, batch_size=batch_size).argmax(1)
        out[k] = (pred != ys) & (size <= eps * (1 + 1e-5) + 1e-6)
    return out


def median_finite(values: np.ndarray) -> float:
    """Median treating 'not found' (inf) as larger than anything (a median over all points, possibly inf)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan")
    m = float(np.median(v))
    return m if math.isfinite(m) else float("inf")
