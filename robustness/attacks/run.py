"""Running one registered attack: :func:`run_attack` and the result it returns, :class:`AttackOutcome`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import foolbox as fb
import numpy as np
import torch

from robustness.attacks.autoattack import square
from robustness.attacks.blackbox import starting_points
from robustness.attacks.spec import AttackBudget, AttackSpec, Norm
from robustness.attacks.white_box import WhiteBox


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
    spec: AttackSpec,
    fmodel: fb.Model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: list[float],
    budget: AttackBudget,
    seed: int = 0,
    keep_advs: bool = True,
) -> AttackOutcome:
    """Run ``spec`` on (x, y) at every ε; returns success masks (len(eps), N) and the adversarials."""
    eps = [float(e) for e in epsilons]
    n = len(x)
    t0 = time.perf_counter()
    if n == 0:
        return AttackOutcome(
            spec.name,
            eps,
            np.zeros((len(eps), 0), bool),
            [x[:0]] * len(eps) if keep_advs else None,
            np.zeros(0) if spec.kind == "min_norm" else None,
            0.0,
            0,
        )
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
    return AttackOutcome(
        spec.name, eps, success, advs if keep_advs else None, min_norm, time.perf_counter() - t0, queries
    )


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
    if spec.build is square and spec.norm == "l2" and min(x.shape[-2:]) < 5:
        raise ValueError(f"{spec.name} needs images of at least 5x5 pixels, got {tuple(x.shape[-2:])}")
    n_classes = int(net(x[:1]).shape[1])

    def attack_at(e):
        with torch.enable_grad():
            adv = spec.build(budget, net, spec.norm, e, n_classes, seed)(x, y).detach()
        size = lp_norms(adv - x, spec.norm)
        inside = (
            (size <= e * (1 + 1e-5) + 1e-6) & (adv.flatten(1).amin(1) >= 0) & (adv.flatten(1).amax(1) <= 1)
        )
        return (net(adv).argmax(1) != y) & inside, torch.where(inside.view(-1, *[1] * (x.dim() - 1)), adv, x)

    return _over_eps(x, eps, attack_at)


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
