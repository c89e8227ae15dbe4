"""Foolbox gradient attacks with the stable losses of :mod:`robustness.attack_losses`, and their builders.

FGSM / PGD are subclassed (stable losses, per-point early stop), DeepFool for speed (same result); C&W and FMN are
Foolbox's own. Each builder maps an :class:`AttackBudget` to a Foolbox attack.
"""

from __future__ import annotations

from collections.abc import Callable

import eagerpy as ep
import foolbox as fb
import torch
from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds

from robustness.attack_losses import LOSSES
from robustness.attacks.spec import AttackBudget


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
        x = (
            (self.get_random_start(x0e, epsilon).raw if self.random_start else x0.clone())
            .clamp(lo, hi)
            .detach()
        )
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
        if (
            not isinstance(x0e, ep.PyTorchTensor)
            or type(crit) is not fb.criteria.Misclassification
            or self.loss != "logits"
        ):
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
        return self.get_perturbations(
            ep.astensor(dist[r, best] + 1e-4), ep.astensor(grads_e.raw[r, best])
        ).raw


class L2DeepFool(_ActiveDeepFool, fb.attacks.L2DeepFoolAttack):
    pass


class LinfDeepFool(_ActiveDeepFool, fb.attacks.LinfDeepFoolAttack):
    pass


def _pgd_stepsize(steps: int) -> float:
    """Madry et al.'s heuristic: total path 2.5 ε over the steps."""
    return 2.5 / max(steps, 1)


def pgd(cls: type) -> Callable[[AttackBudget], fb.Attack]:
    def build(b: AttackBudget) -> fb.Attack:
        a = cls(steps=b.pgd_steps, rel_stepsize=_pgd_stepsize(b.pgd_steps), random_start=True)
        return a.repeat(b.pgd_restarts) if b.pgd_restarts > 1 else a

    return build


def fgsm(b: AttackBudget) -> fb.Attack:
    return LinfPGD(steps=1, rel_stepsize=1.0, random_start=False)


def deepfool_l2(b: AttackBudget) -> fb.Attack:
    return L2DeepFool(steps=b.deepfool_steps, candidates=b.deepfool_candidates)


def deepfool_linf(b: AttackBudget) -> fb.Attack:
    return LinfDeepFool(steps=b.deepfool_steps, candidates=b.deepfool_candidates)


def cw_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=b.cw_binary_steps,
        steps=b.cw_steps,
        stepsize=b.cw_stepsize,
        initial_const=b.cw_initial_const,
    )


def fmn_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.L2FMNAttack(steps=b.fmn_steps, max_stepsize=b.fmn_l2_max_stepsize)


def fmn_linf(b: AttackBudget) -> fb.Attack:
    return fb.attacks.LInfFMNAttack(steps=b.fmn_steps)
