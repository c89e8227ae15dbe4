"""Typed attack registry: every attack is called the same way and returns success masks shaped (len(eps), N).

``run_attack(spec, model, x, y, epsilons, budget, seed)`` runs one registered attack on correctly classified
points ``x`` (float32 NCHW in [0, 1], torch) with labels ``y`` (int64) and returns an :class:`AttackOutcome`:

* ``success[k, i]`` — the attack found an adversarial for point ``i`` within ``epsilons[k]`` (the returned input is
  clipped to the ε-ball and the box and re-checked);
* ``advs[k]`` — those inputs (the reject option asks whether the score module accepts them);
* ``min_norm[i]`` — for minimum-norm attacks, the norm of the unclipped adversarial (``inf`` if none was found).

Two libraries serve the attacks. Foolbox 3.3.4 gives FGSM / PGD (subclassed: stable losses of
:mod:`robustness.attack_losses`, per-point early stop), DeepFool (subclassed for speed, same result), C&W, FMN and the
decision-based HopSkipJump (against the exported ONNX graph through :class:`QueryCountingModel`). torchattacks
3.5.1 (a port of Croce & Hein's AutoAttack code) gives the AutoAttack components: APGD-CE (its CE replaced by the
stable form), APGD-T (targeted DLR, all K−1 targets), FAB-T (all K−1 targets) and Square. Fixed-ε attacks are
rerun independently at every ε; minimum-norm attacks run once and are clipped per ε.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
import torchattacks
from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds
from torch import nn

from robustness.attack_losses import LOSSES, log_ce

Norm = Literal["linf", "l2"]
Kind = Literal["fixed", "min_norm"]
Access = Literal["white", "black"]
Tier = Literal["cheap", "expensive", "blackbox"]
Library = Literal["foolbox", "torchattacks"]


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
    apgd_steps: int = 100  # AutoAttack's standard budget
    apgd_restarts: int = 1
    fab_steps: int = 100
    square_queries: int = 5000

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- Foolbox attacks with stable losses
class _EarlyStopPGD:
    """Foolbox PGD (same random start, normalisation, projection, step size) with a stable loss, stopping per point.

    The loss is ``LOSSES[loss_name]`` (log of the stable CE, or the logit margin, :mod:`robustness.attack_losses`). Points whose current
    iterate is already misclassified are frozen there and dropped from the batch, so the cost follows the points
    that still resist (success can only be >= the final-iterate loop's).
    """

    loss_name = "ce"

    def run(self, model, inputs, criterion, *, epsilon, **kwargs):
        raise_if_kwargs(kwargs)
        x0e, restore_type = ep.astensor_(inputs)
        crit = get_criterion(criterion)
        if not isinstance(x0e, ep.PyTorchTensor) or type(crit) is not fb.criteria.Misclassification:
            raise ValueError("the bench's PGD needs torch inputs and an untargeted criterion")
        verify_input_bounds(x0e, model)
        x0, y = x0e.raw, crit.labels.raw
        lo, hi = model.bounds
        stepsize = self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * epsilon
        x = (self.get_random_start(x0e, epsilon).raw if self.random_start else x0.clone()).clamp(lo, hi).detach()
        active = torch.arange(len(x0), device=x0.device)
        loss_fn = LOSSES[self.loss_name]
        for _ in range(self.steps):
            if len(active) == 0:
                break
            xa = x[active].clone().requires_grad_(True)
            logits = model(xa)
            ya = y[active]
            keep = logits.argmax(1) == ya
            if not keep.any():
                break
            (grad,) = torch.autograd.grad(loss_fn(logits, ya).sum(), xa)
            idx = active[keep]
            xk = ep.astensor(xa.detach()[keep])
            g = self.normalize(ep.astensor(grad[keep].float()), x=xk, bounds=model.bounds)
            xn = self.project(xk + stepsize * g, ep.astensor(x0[idx]), epsilon)
            x[idx] = ep.clip(xn, lo, hi).raw
            active = idx
        return restore_type(ep.astensor(x))


class LinfPGD(_EarlyStopPGD, fb.attacks.LinfPGD):
    """L∞ PGD on the log of the stable cross-entropy."""


class MarginLinfPGD(_EarlyStopPGD, fb.attacks.LinfPGD):
    """L∞ PGD on the logit margin ``max_{j≠y} l_j − l_y`` (the C&W loss)."""

    loss_name = "margin"


class L2PGD(_EarlyStopPGD, fb.attacks.L2PGD):
    """L2 PGD on the log of the stable cross-entropy."""


class MarginL2PGD(_EarlyStopPGD, fb.attacks.L2PGD):
    """L2 PGD on the logit margin."""

    loss_name = "margin"


class _ActiveDeepFool:
    """Foolbox DeepFool (logit-difference loss, same distances / perturbations / overshoot) with two speed-ups:
    one forward pass serves all candidate gradients, and converged points leave the batch."""

    def run(self, model, inputs, criterion, *, early_stop=None, **kwargs):
        raise_if_kwargs(kwargs)
        x0e, restore_type = ep.astensor_(inputs)
        crit = get_criterion(criterion)
        if not isinstance(x0e, ep.PyTorchTensor) or type(crit) is not fb.criteria.Misclassification \
                or self.loss != "logits":
            return super().run(model, inputs, criterion, early_stop=early_stop)
        verify_input_bounds(x0e, model)
        lo, hi = model.bounds
        x0, y = x0e.raw, crit.labels.raw
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
            step = self._step(logits, xa, classes[active], n_cand, keep)
            idx = active[keep]
            p_total[idx] += step
            x[idx] = (x0[idx] + (1.0 + self.overshoot) * p_total[idx]).clamp(lo, hi)
            active = idx
        return restore_type(ep.astensor(x))

    def _step(self, logits, xa, cls, n_cand, keep):
        rows = torch.arange(len(cls), device=xa.device)
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
        r = torch.arange(len(best), device=xa.device)
        return self.get_perturbations(ep.astensor(dist[r, best] + 1e-4), ep.astensor(grads_e.raw[r, best])).raw


class L2DeepFool(_ActiveDeepFool, fb.attacks.L2DeepFoolAttack):
    pass


class LinfDeepFool(_ActiveDeepFool, fb.attacks.LinfDeepFoolAttack):
    pass


# --------------------------------------------------------------------------- torchattacks (AutoAttack components)
class StableAPGDCE(torchattacks.APGD):
    """torchattacks' APGD with its cross-entropy replaced by :func:`robustness.attack_losses.log_ce` (log of the stable CE).

    torchattacks picks the per-row criterion by name; the "dlr" slot calls ``self.dlr_loss``, which is overridden
    here, so every other line of APGD (step-size halving, momentum, checkpoints, restarts) is the library's.
    """

    def __init__(self, model, **kwargs):
        super().__init__(model, loss="dlr", **kwargs)

    def dlr_loss(self, x, y):
        return log_ce(x, y)


TA_NORM = {"linf": "Linf", "l2": "L2"}


def _apgd_ce(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return StableAPGDCE(net, norm=TA_NORM[norm], eps=eps, steps=b.apgd_steps, n_restarts=b.apgd_restarts, seed=seed)


def _apgd_t(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.APGDT(net, norm=TA_NORM[norm], eps=eps, steps=b.apgd_steps, n_restarts=b.apgd_restarts,
                              seed=seed, n_classes=n_classes)


def _fab_t(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.FAB(net, norm=TA_NORM[norm], eps=eps, steps=b.fab_steps, n_restarts=1, seed=seed,
                            multi_targeted=True, n_classes=n_classes)


def _square(b: AttackBudget, net: nn.Module, norm: Norm, eps: float, n_classes: int, seed: int):
    return torchattacks.Square(net, norm=TA_NORM[norm], eps=eps, n_queries=b.square_queries, n_restarts=1,
                               seed=seed, loss="margin")


# --------------------------------------------------------------------------- Foolbox builders
def _pgd_stepsize(steps: int) -> float:
    """Madry et al.'s heuristic: total path 2.5 ε over the steps."""
    return 2.5 / max(steps, 1)


def _pgd(cls: type) -> Callable[[AttackBudget], fb.Attack]:
    def build(b: AttackBudget) -> fb.Attack:
        a = cls(steps=b.pgd_steps, rel_stepsize=_pgd_stepsize(b.pgd_steps), random_start=True)
        return a.repeat(b.pgd_restarts) if b.pgd_restarts > 1 else a

    return build


def _fgsm(b: AttackBudget) -> fb.Attack:
    return LinfPGD(steps=1, rel_stepsize=1.0, random_start=False)


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
    """One registered attack: how to build it from a budget and how to read its result.

    ``library="torchattacks"`` attacks are built per ε as ``build(budget, logits_net, norm, eps, n_classes,
    seed)``; ``residual`` attacks follow the AutoAttack protocol (they run only on the points that every earlier
    attack of the ensemble left unbroken at that ε).
    """

    name: str
    norm: Norm
    kind: Kind
    access: Access
    iterative: bool
    tier: Tier
    build: Callable = field(repr=False)
    description: str = ""
    library: Library = "foolbox"
    residual: bool = False


REGISTRY: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"attack {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


for _spec in (
    AttackSpec("fgsm", "linf", "fixed", "white", False, "cheap", _fgsm, "FGSM (single step, log of the stable CE)"),
    AttackSpec("pgd_linf", "linf", "fixed", "white", True, "cheap", _pgd(LinfPGD),
               "L∞ PGD, log CE, random start"),
    AttackSpec("pgd_linf_margin", "linf", "fixed", "white", True, "cheap", _pgd(MarginLinfPGD),
               "L∞ PGD, logit-margin (C&W) loss, random start"),
    AttackSpec("pgd_l2", "l2", "fixed", "white", True, "cheap", _pgd(L2PGD), "L2 PGD, log CE, random start"),
    AttackSpec("pgd_l2_margin", "l2", "fixed", "white", True, "cheap", _pgd(MarginL2PGD),
               "L2 PGD, logit-margin loss, random start"),
    AttackSpec("deepfool_l2", "l2", "min_norm", "white", True, "expensive", _deepfool_l2, "L2 DeepFool (logits)"),
    AttackSpec("deepfool_linf", "linf", "min_norm", "white", True, "expensive", _deepfool_linf,
               "L∞ DeepFool (logits)"),
    AttackSpec("cw_l2", "l2", "min_norm", "white", True, "expensive", _cw_l2, "L2 Carlini-Wagner, bounded budget"),
    AttackSpec("fmn_l2", "l2", "min_norm", "white", True, "expensive", _fmn_l2, "L2 fast minimum-norm"),
    AttackSpec("fmn_linf", "linf", "min_norm", "white", True, "expensive", _fmn_linf, "L∞ fast minimum-norm"),
    AttackSpec("hsj_l2", "l2", "min_norm", "black", True, "blackbox", _hsj_l2,
               "HopSkipJump (decision-based, L2) against the exported ONNX graph"),
):
    register(_spec)

for _norm in ("linf", "l2"):
    _title = "L∞" if _norm == "linf" else "L2"
    for _name, _build, _desc in (
        ("apgd_ce", _apgd_ce, "APGD-CE (log CE)"),
        ("apgd_t", _apgd_t, "APGD-T (targeted DLR, all K−1 targets)"),
        ("fab_t", _fab_t, "FAB-T (all K−1 targets)"),
        ("square", _square, "Square (score-based, margin loss)"),
    ):
        register(AttackSpec(f"{_name}_{_norm}", _norm, "fixed", "white", True, "expensive", _build,
                            f"{_title} {_desc}, torchattacks", library="torchattacks", residual=True))

ALL_ATTACKS = tuple(REGISTRY)
# The default mode leaves out FAB-T (the costliest AutoAttack component on 2 CPU cores; in AutoAttack's own runs it
# rarely breaks a point APGD-T left); --thorough runs every registered attack.
DEFAULT_ATTACKS = tuple(name for name in REGISTRY if not name.startswith("fab_t"))


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


class LogitsOf(nn.Module):
    """``net(x)`` reduced to its logits (the networks of the bench return ``(logits, z)``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


class WhiteBox(fb.PyTorchModel):
    """Foolbox model over a network's logits that also hands the logits module to torchattacks."""

    def __init__(self, net: nn.Module, bounds: tuple[float, float] = (0.0, 1.0)):
        device = next(iter(net.parameters()), torch.zeros(0)).device
        self.logits_net = LogitsOf(net).eval()
        super().__init__(self.logits_net, bounds=bounds, device=device)


def white_box(net: nn.Module) -> WhiteBox:
    """Foolbox model over a network returning ``(logits, z)`` or logits."""
    return WhiteBox(net)


# --------------------------------------------------------------------------- running one attack
@dataclass
class AttackOutcome:
    name: str
    epsilons: list[float]
    success: np.ndarray  # (len(eps), N) bool
    advs: list[torch.Tensor] | None  # adversarials per ε, inside the ε-ball and the box (None when not kept)
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
    """Run ``spec`` on (x, y) at every ε; returns success masks (len(eps), N) and the adversarials."""
    eps = [float(e) for e in epsilons]
    n = len(x)
    t0 = time.perf_counter()
    if n == 0:
        return AttackOutcome(spec.name, eps, np.zeros((len(eps), 0), bool), [x[:0]] * len(eps) if keep_advs else None,
                             np.zeros(0) if spec.kind == "min_norm" else None, 0.0, 0)
    seed_everything(seed)
    q0 = getattr(fmodel, "queries", None)
    min_norm = None
    if spec.library == "torchattacks":
        success, advs = _run_torchattacks(spec, fmodel, x, y, eps, budget, seed)
    elif spec.kind == "fixed":
        success, advs = _run_fixed(spec.build(budget), fmodel, x, y, eps)
    elif spec.access == "black":
        success, advs, min_norm = _run_decision_based(spec.build(budget), spec, fmodel, x, y, eps)
    else:
        success, advs, min_norm = _run_min_norm(spec.build(budget), spec, fmodel, x, y, eps)
    queries = None if q0 is None else int(fmodel.queries - q0)
    return AttackOutcome(spec.name, eps, success, advs if keep_advs else None, min_norm,
                         time.perf_counter() - t0, queries)


def _over_eps(x, eps, attack_at) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Success masks ``(len(eps), N)`` and adversarials per ε; ``attack_at(e) -> (success, adversarials)``
    runs for every ε > 0 (ε <= 0 keeps the clean inputs, no success)."""
    success = np.zeros((len(eps), len(x)), dtype=bool)
    advs: list[torch.Tensor] = []
    for k, e in enumerate(eps):
        if e <= 0:
            advs.append(x.clone())
            continue
        ok, adv = attack_at(e)
        success[k] = ok.cpu().numpy()
        advs.append(adv)
    return success, advs


def _run_fixed(attack, fmodel, x, y, eps):
    def attack_at(e):
        _, clipped, ok = attack(fmodel, x, y, epsilons=e)
        return ok, clipped.detach()

    return _over_eps(x, eps, attack_at)


def _run_min_norm(attack, spec, fmodel, x, y, eps):
    raw, clipped, ok = attack(fmodel, x, y, epsilons=[None, *eps])
    ok = ok.cpu().numpy().astype(bool)
    norms = lp_norms(raw[0].detach() - x, spec.norm).cpu().numpy().astype(np.float64)
    return ok[1:], [c.detach() for c in clipped[1:]], np.where(ok[0], norms, np.inf)


@torch.no_grad()
def _run_torchattacks(spec, fmodel: WhiteBox, x, y, eps, budget, seed):
    net = fmodel.logits_net
    if spec.build is _square and spec.norm == "l2" and min(x.shape[-2:]) < 5:
        raise ValueError(f"{spec.name} needs images of at least 5x5 pixels, got {tuple(x.shape[-2:])}")
    n_classes = int(net(x[:1]).shape[1])

    def attack_at(e):
        with torch.enable_grad():
            adv = spec.build(budget, net, spec.norm, e, n_classes, seed)(x, y).detach()
        size = lp_norms(adv - x, spec.norm)
        inside = (size <= e * (1 + 1e-5) + 1e-6) & (adv.flatten(1).amin(1) >= 0) & (adv.flatten(1).amax(1) <= 1)
        return (net(adv).argmax(1) != y) & inside, torch.where(inside.view(-1, *[1] * (x.dim() - 1)), adv, x)

    return _over_eps(x, eps, attack_at)


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


# --------------------------------------------------------------------------- diagnostics
def logits_and_z(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` as ``(logits, z)``; a logits-only network gets ``z = logits``."""
    out = net(x)
    return out if isinstance(out, tuple) else (out, out)


def input_gradient_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Per point L2 norms of the input gradients of float32 CE (what a naive attack would use), the CE attacks' objective (log CE) and
    the logit margin at the clean points."""
    out: dict[str, list] = {"ce_float32": [], "ce": [], "margin": []}
    net.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].clone().requires_grad_(True)
        yb = y[i : i + batch_size]
        logits, _ = logits_and_z(net, xb)
        losses = {"ce_float32": nn.functional.cross_entropy(logits, yb, reduction="sum"),
                  "ce": LOSSES["ce"](logits, yb).sum(), "margin": LOSSES["margin"](logits, yb).sum()}
        for k, (name, loss) in enumerate(losses.items()):
            (g,) = torch.autograd.grad(loss, xb, retain_graph=k < len(losses) - 1)
            out[name].append(g.flatten(1).double().norm(dim=1).detach().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in out.items()}
