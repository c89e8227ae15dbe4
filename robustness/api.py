"""The rejection-aware attack from Python, on your own model and score: :func:`evaluate_reject_option`.

A runnable example (a doctest) is in :func:`evaluate_reject_option`'s docstring.

``model``: any ``nn.Module`` mapping ``[0, 1]`` images to logits (its feature layer is read with a forward hook:
``feature_layer`` names a module whose output is ``z``; default the input of the last ``nn.Linear``), or a model
already returning ``(logits, z)`` (``feature_layer=False``). ``score``: a torch module with
``neg_log_reliability_to(logits, z, cls)`` and ``accepted(logits, z, threshold)`` (every score of
:mod:`training.score` and :mod:`training.posthoc`), or a function ``log_reliability(logits, z, cls)`` returning, per
row, the log of the reliability the input would have if it were predicted ``cls`` (differentiable; an input is
accepted when that of its predicted class is ``>= log(threshold)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustness.adaptive import AdaptiveBudget, adaptive_attack
from robustness.attacks import Norm, logits_and_z
from robustness.reject_option import RejectOption
from robustness.stats import proportion_of
from training.outside import FeatureModel


class CallableScore(nn.Module):
    """A reject score from a function ``log_reliability(logits, z, cls)`` (see the module docstring)."""

    name = "callable"

    def __init__(self, log_reliability: Callable[[Tensor, Tensor, Tensor], Tensor]):
        super().__init__()
        self.log_reliability = log_reliability

    def neg_log_reliability_to(self, logits: Tensor, z: Tensor, cls: Tensor) -> Tensor:
        return -self.log_reliability(logits, z, cls)

    def accepted(self, logits: Tensor, z: Tensor, threshold: float) -> Tensor:
        return self.log_reliability(logits, z, logits.argmax(dim=1)) >= math.log(threshold)


def evaluate_reject_option(
    model: nn.Module,
    score: nn.Module | Callable,
    threshold: float,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    norm: Norm = "linf",
    budget: AdaptiveBudget | None = None,
    feature_layer: str | None | bool = None,
    seed: int = 0,
) -> dict:
    """The all-target adaptive attack on the defended decision "misclassified AND accepted" at every ε.

    Returns ``{"epsilons", "robust_accuracy", "intervals", "success", "clean_correct"}``: per ε the share of the
    points that are correctly classified and for which no point of the ε-ball is misclassified and accepted (with
    its 95% Wilson interval), and the per-point success mask ``(len(eps), N)`` over the correctly classified points.

    Example: a two-class toy on 2-pixel images whose score accepts only inputs near the centre of
    their predicted class.

    >>> import torch
    >>> from torch import nn
    >>> from robustness import evaluate_reject_option
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # class 1 iff pixel 0 > 0.5
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([5.0, -5.0]))
    >>> centres = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    >>> def log_reliability(logits, z, cls):  # z: the input of the last nn.Linear (here the 2 pixels)
    ...     return -((z - centres[cls]) ** 2).sum(1) / 0.01
    >>> x, y = torch.tensor([[[[0.25, 0.5]]], [[[0.3, 0.5]]]]), torch.tensor([0, 0])
    >>> res = evaluate_reject_option(net, log_reliability, 0.5, x, y, epsilons=[0.05, 0.6], norm="linf")
    >>> res["robust_accuracy"]  # at 0.6 both points reach class 1's centre: misclassified AND accepted
    [1.0, 0.0]
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    net = model if feature_layer is False else FeatureModel(model, feature_layer or None)
    net.eval()
    sc = score if isinstance(score, nn.Module) else CallableScore(score)
    option = RejectOption(getattr(sc, "name", "score"), sc, float(threshold))
    with torch.no_grad():
        logits, _ = logits_and_z(net, x)
    correct = (logits.argmax(1) == y).cpu().numpy()
    idx = np.flatnonzero(correct)
    res = adaptive_attack(net, option, x[idx], y[idx], list(epsilons), norm, budget or AdaptiveBudget(), seed)
    robust = np.zeros((len(res.epsilons), len(x)), dtype=bool)
    robust[:, idx] = ~res.success
    props = [proportion_of(r) for r in robust]
    return {
        "epsilons": res.epsilons,
        "robust_accuracy": [p["value"] for p in props],
        "intervals": [p["ci95"] for p in props],
        "success": res.success,
        "clean_correct": correct,
        "unconfirmed": res.unconfirmed,
    }
