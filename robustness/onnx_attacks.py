"""Black-box attacks on a graph known only by its logits (:mod:`robustness.onnx_bench`), each success recomputed
from the logits inside the ε-ball and the box.

* :func:`square_untargeted`: Square (torchattacks, score-based, margin loss) on the prediction;
* :func:`square_all_targets`: targeted Square at every wrong class in turn on the defended decision of a
  :class:`LogitOption` (predicted as another class **and** accepted);
* :func:`hsj_min_norms`: HopSkipJump (Foolbox, decision-based, L2) from the nearest point already fooled, its smallest
  adversarial norm per point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
import torchattacks
from torch import nn

from robustness.attacks import QueryCountingModel, lp_norms, seed_everything
from robustness.attacks.autoattack import TA_NORM
from robustness.ood import Detector, Features

Logits = Callable[[np.ndarray], np.ndarray]


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
    pool_pred = pool_logits.argmax(1)
    pool_accepted = (
        np.ones(len(pool_logits), bool) if option is None else option.score(pool_logits) >= option.threshold
    )
    fooled = (pool_pred[None, :] != yn[:, None]) & pool_accepted[None, :]  # (points, pool): a valid start
    d = torch.cdist(x.flatten(1), pool_x.flatten(1)).numpy()
    d[~fooled] = np.inf
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
