"""The adaptive attack on the defended decision (misclassified AND accepted by the served score module)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustness.adaptive import AdaptiveBudget, adaptive_attack
from robustness.reject_option import RejectOption
from training.score import SoftmaxScore


class TiedTargets(nn.Module):
    """Four classes on inputs (N, 2) in [0, 1]²: l0 = 1, l1 = l2 = 3·x_a, l3 = 3·x_b − 0.5; z = logits.

    At the clean point (0, 0) the wrong classes rank 1, 2 (logit 0) before 3 (−0.5). Classes 1 and 2 always tie,
    so whenever one of them is predicted its softmax is <= 1/2 and a threshold of 0.6 rejects it. Every gradient of
    the loss towards target 1 or 2 is >= 0 in x_b (l3 only enters through ``max`` and ``log_softmax``, both with a
    positive coefficient), so an attack that starts at the clean point and targets only the two most likely wrong
    classes never raises l3 and cannot succeed. Target 3 can: at x = (0, 1), p3 = e^2.5 / (e^2.5 + e + 2) ≈ 0.72.
    """

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [0.0, 3.0]]))
            self.lin.bias.copy_(torch.tensor([1.0, 0.0, 0.0, -0.5]))

    def forward(self, x):
        logits = self.lin(x)
        return logits, logits


def test_all_targets_succeed_where_the_two_most_likely_cannot():
    net = TiedTargets().eval()
    x = torch.zeros(3, 2)
    y = torch.zeros(3, dtype=torch.long)
    option = RejectOption("max_softmax", SoftmaxScore(), 0.6)
    eps = [0.0, 1.0]
    two = adaptive_attack(net, option, x, y, eps, "linf", AdaptiveBudget(steps=30, restarts=1, n_targets=2))
    assert not two.success.any()
    every = adaptive_attack(net, option, x, y, eps, "linf", AdaptiveBudget(steps=30, restarts=1))
    assert every.success[1].all() and not every.success[0].any()
    for norm in ("linf", "l2"):
        assert (
            adaptive_attack(net, option, x, y, eps, norm, AdaptiveBudget(steps=30, restarts=1))
            .success[1]
            .all()
        )


def test_success_needs_acceptance_and_is_confirmed_by_the_served_graph():
    net = TiedTargets().eval()
    x, y = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    never = RejectOption(
        "max_softmax", SoftmaxScore(), 0.99
    )  # p3 <= e^2.5 / (e^2.5 + e + 2) < 0.99 in the box
    assert not adaptive_attack(net, never, x, y, [1.0], "linf").success.any()

    def refuses(pixels: np.ndarray):  # a served graph that rejects everything
        return np.full(len(pixels), 3), np.zeros(len(pixels), bool)

    res = adaptive_attack(net, RejectOption("max_softmax", SoftmaxScore(), 0.6, refuses), x, y, [1.0], "linf")
    assert not res.success.any() and res.unconfirmed == 2


def test_success_is_monotone_in_eps_and_stays_in_the_ball():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.rand(20, 1, 4, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    option = RejectOption("max_softmax", SoftmaxScore(), 0.3)
    res = adaptive_attack(net, option, x, y, [0.3, 0.0, 0.05, 1.0], "linf", AdaptiveBudget(steps=10))
    s = res.success[[1, 2, 0, 3]]
    assert not s[0].any() and (np.diff(s.astype(int), axis=0) >= 0).all() and s[-1].all()
