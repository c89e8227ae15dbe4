"""The adaptive attack on the defended decision: "misclassified AND accepted by the served score".

A reject option turns the classifier into ``f(x) = argmax logits`` if the score accepts ``x``, else "abstain". An
attack on it succeeds only when the final point is a wrong prediction that the score accepts. For every wrong
class ``t`` (all K−1 of them, ordered by the clean logits) and every restart, :func:`adaptive_attack` minimises

    relu(max_{j≠t} l_j − l_t + κ) + λ · relu(neg_log_reliability_to(logits, z, t) + log θ + κ)

(the logit margin towards ``t`` plus the acceptance term: −log of the reliability the input would have if it were
predicted ``t``, against −log θ of the threshold θ) with a cosine step-size schedule starting at 2ε (sign steps for
L∞, normalised gradients for L2), projected onto the ε-ball and the box [0, 1]. Restart 0 starts at the clean point,
later restarts uniformly inside the ball. The score is the torch module the ONNX export puts in the graph
(:mod:`training.score`): the same code decides acceptance here and in serving. Every iterate is checked; the first
successful point of each sample is kept, and only the kept points that pass a final check (inside the ball, still
misclassified and accepted by the score module and, when given, by the served ONNX graph) count.

ε values are processed in increasing order; a point broken at a smaller ε stays broken at every larger one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from robustness.attack_losses import margin
from robustness.attacks import Norm, logits_and_z, lp_norms, seed_everything
from robustness.reject_option import RejectOption


@dataclass(frozen=True)
class AdaptiveBudget:
    steps: int = 30
    restarts: int = 2
    n_targets: int | None = None  # None: all K−1 wrong classes
    lam: float = 1.0
    kappa: float = 0.01

    def stronger(self) -> AdaptiveBudget:
        """Twice the steps and twice the restarts (the convergence check)."""
        return AdaptiveBudget(2 * self.steps, 2 * self.restarts, self.n_targets, self.lam, self.kappa)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdaptiveResult:
    epsilons: list[float]
    success: np.ndarray  # (len(eps), N): verified successes (envelope over increasing ε)
    unconfirmed: int  # successes of the torch score that the served graph did not confirm (dropped)
    budget: AdaptiveBudget


def _project(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    if norm == "linf":
        x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps)
    else:
        d = (x - x0).flatten(1)
        scale = (eps / d.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        x = x0 + (d * scale[:, None]).view_as(x0)
    return x.clamp(0.0, 1.0)


def _random_start(x0: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    if norm == "linf":
        return _project(x0 + torch.empty_like(x0).uniform_(-eps, eps), x0, eps, norm)
    d = torch.randn_like(x0).flatten(1)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12) * eps * torch.rand(len(x0), 1, device=x0.device)
    return _project(x0 + d.view_as(x0), x0, eps, norm)


def _loss(option: RejectOption, logits, z, t, budget: AdaptiveBudget) -> torch.Tensor:
    gap = option.score.neg_log_reliability_to(logits, z, t) + math.log(option.threshold)
    return (torch.relu(margin(logits, t) + budget.kappa) + budget.lam * torch.relu(gap + budget.kappa)).sum()


def targeted_run(
    net: nn.Module,
    option: RejectOption,
    x0: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    eps: float,
    norm: Norm,
    steps: int,
    random_start: bool | torch.Tensor,
    budget: AdaptiveBudget,
    group: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targeted runs, one per row (target ``t``); returns (found mask, first successful point per row or x0).

    ``random_start``: per row (or for all rows) whether to start uniformly inside the ball instead of at ``x0``.
    ``group``: rows with the same group id are attempts on the same sample; once one of them succeeds the others
    stop (they could only find a second adversarial for a sample that already has one).
    """
    x = x0.clone()
    rs = torch.as_tensor(random_start, device=x0.device).expand(len(x0))
    if rs.any():
        x[rs] = _random_start(x0[rs], eps, norm)
    found = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    best = x0.clone()
    gid = torch.arange(len(x0), device=x0.device) if group is None else group
    group_done = torch.zeros(int(gid.max()) + 1 if len(gid) else 0, dtype=torch.bool, device=x0.device)
    act = torch.arange(len(x0), device=x0.device)
    for k in range(steps + 1):
        xs = x[act].clone().requires_grad_(True)
        logits, z = logits_and_z(net, xs)
        with torch.no_grad():
            ok = (logits.argmax(1) != y[act]) & option.score.accepted(logits, z, option.threshold)
            found[act[ok]] = True
            best[act[ok]] = xs.detach()[ok]
            group_done[gid[act[ok]]] = True
        if k == steps or ok.all():
            break
        (grad,) = torch.autograd.grad(_loss(option, logits, z, t[act], budget), xs)
        with torch.no_grad():
            keep = ~group_done[gid[act]]
            a = act[keep]
            if len(a) == 0:
                break
            g = grad[keep]
            alpha = eps * (1.0 + math.cos(math.pi * k / steps))  # cosine schedule from 2ε
            if norm == "linf":
                d = g.sign()
            else:
                d = g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (g.dim() - 1))
            x[a] = _project(xs.detach()[keep] - alpha * d, x0[a], eps, norm)
            act = a
    return found, best


def _wrong_classes(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, K−1) wrong classes of each point, most likely first (by the clean logits)."""
    with torch.no_grad():
        logits, _ = logits_and_z(net, x)
    masked = logits.clone()
    masked[torch.arange(len(y)), y] = -torch.inf
    return masked.argsort(dim=1, descending=True)[:, : logits.shape[1] - 1]


def _verify(net, option: RejectOption, x0, y, adv, eps: float, norm: Norm) -> tuple[np.ndarray, int]:
    inside = (lp_norms(adv - x0, norm) <= eps * (1 + 1e-5) + 1e-6).cpu().numpy()
    ok = option.fooled(net, adv, y) & inside
    unconfirmed = 0
    if option.confirm is not None and ok.any():
        rows = np.flatnonzero(ok)
        pred, acc = option.confirm(adv[torch.as_tensor(rows, device=adv.device)].cpu().numpy())
        served = (np.asarray(pred) != y.cpu().numpy()[rows]) & np.asarray(acc, dtype=bool)
        unconfirmed = int((~served).sum())
        ok[rows[~served]] = False
    return ok, unconfirmed


def adaptive_attack(
    net: nn.Module,
    option: RejectOption,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: list[float],
    norm: Norm,
    budget: AdaptiveBudget = AdaptiveBudget(),
    seed: int = 0,
    batch_size: int = 512,
) -> AdaptiveResult:
    """Attack the defended decision at every ε (see the module docstring); ``x`` are correctly classified points.

    The targets and restarts of a sample run side by side as rows of one batch (up to ``batch_size`` rows), so a
    few hard samples cost a few large batches rather than thousands of tiny ones.
    """
    seed_everything(seed)
    net.eval()
    n = len(x)
    success = np.zeros((len(epsilons), n), dtype=bool)
    if n == 0:
        return AdaptiveResult(list(epsilons), success, 0, budget)
    targets = _wrong_classes(net, x, y)
    n_t = targets.shape[1] if budget.n_targets is None else min(budget.n_targets, targets.shape[1])
    per_point = n_t * budget.restarts
    chunk = max(1, batch_size // per_point)
    tgt = torch.arange(n_t, device=x.device).repeat_interleave(budget.restarts)  # row -> target rank
    restart = torch.arange(budget.restarts, device=x.device).repeat(n_t)  # row -> restart index
    done = np.zeros(n, dtype=bool)
    unconfirmed = 0
    for k in np.argsort(epsilons, kind="stable"):
        eps = float(epsilons[k])
        if eps > 0:
            adv = x.clone()
            broken = np.zeros(n, dtype=bool)
            todo = np.flatnonzero(~done)
            for s in range(0, len(todo), chunk):
                pts = torch.as_tensor(todo[s : s + chunk], device=x.device)
                rows = pts.repeat_interleave(per_point)
                local = torch.arange(len(pts), device=x.device).repeat_interleave(per_point)
                found, best = targeted_run(
                    net,
                    option,
                    x[rows],
                    y[rows],
                    targets[rows, tgt.repeat(len(pts))],
                    eps,
                    norm,
                    budget.steps,
                    restart.repeat(len(pts)) > 0,
                    budget,
                    group=local,
                )
                for j in torch.nonzero(found).flatten().tolist():  # the first successful row of each sample
                    p = int(rows[j])
                    if not broken[p]:
                        adv[p] = best[j]
                        broken[p] = True
            rows_b = np.flatnonzero(broken)
            if len(rows_b):
                it = torch.as_tensor(rows_b, device=x.device)
                ok, bad = _verify(net, option, x[it], y[it], adv[it], eps, norm)
                unconfirmed += bad
                done[rows_b[ok]] = True
        success[k] = done
    return AdaptiveResult([float(e) for e in epsilons], success, unconfirmed, budget)
