"""Sanity flags: unit checks on numbers, then the whole adversarial pipeline on a normal and a gradient-masked toy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustness import sanity
from robustness.adversarial import AdversarialPlan, evaluate_adversarial
from robustness.attacks import AttackBudget


def test_unit_flags_fire_and_stay_quiet():
    assert sanity.large_eps(0.0, 0.5, 100).ok is True
    assert sanity.large_eps(0.3, 0.5, 100).ok is False
    assert sanity.large_eps(None, 0.5, 0).ok is None
    eps = {"a": [0, 0.1, 0.2], "b": [0, 0.1, 0.2]}
    assert sanity.monotone({"a": [0.9, 0.5, 0.1]}, eps).ok is True
    assert sanity.monotone({"a": [0.9, 0.5, 0.6]}, eps).ok is False
    single = sanity.monotone({"a": [0.9, 0.5, 0.1], "b": [0.9, 0.5, 0.6]}, eps, informational=("b",))
    assert single.ok is True and "b" in single.values["informational"]
    assert sanity.iterative_beats_single_step([0.1, 0.5], [0.2, 0.6], [0.1, 0.2]).ok is True
    assert sanity.iterative_beats_single_step([0.1, 0.7], [0.2, 0.6], [0.1, 0.2]).ok is False
    assert sanity.blackbox_not_stronger([0.1, 0.5], [0.2, 0.5], [1, 2], 20).ok is True
    assert sanity.blackbox_not_stronger([0.1, 0.9], [0.2, 0.5], [1, 2], 20).ok is False
    assert sanity.pgd_converged({"x": 0.50}, {"x": 0.49}).ok is True
    assert sanity.pgd_converged({"x": 0.50}, {"x": 0.48}).ok is False  # 2 points is not < 2 points
    assert sanity.pgd_converged({}, {}).ok is None
    assert sanity.no_zero_gradients(np.ones(100), np.ones(100)).ok is True
    assert sanity.no_zero_gradients(np.r_[np.zeros(5), np.ones(95)], np.ones(100)).ok is False
    assert sanity.crosscheck({"0.1": 0.30}, {"0.1": 0.29}, 100).ok is True
    assert sanity.crosscheck({"0.1": 0.30}, {"0.1": 0.25}, 100).ok is False
    assert sanity.any_failed([sanity.Flag("x", True, ""), sanity.Flag("y", False, "")])


class Quantised(nn.Module):
    """Gradient masking on purpose: the input is rounded to 5 grey levels (zero gradient almost everywhere)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def toy():
    """A softmax-regression classifier on sklearn digits (trained in ~0.1 s) and 100 test points."""
    from training.data import load_dataset
    from training.train import to_tensor

    torch.set_num_threads(1)
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = to_tensor(data.train.images), torch.from_numpy(data.train.labels)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), to_tensor(data.test.images[:100]), torch.from_numpy(data.test.labels[:100])


PLAN = AdversarialPlan(
    eps_linf=[0, 0.05, 0.1, 0.2, 0.3], eps_l2=[0, 0.5, 1, 2, 4],
    attacks=("fgsm", "pgd_linf", "deepfool_l2", "hsj_l2"), n_cheap=100, n_expensive=100, n_blackbox=20,
    budget=AttackBudget(pgd_steps=10, hsj_steps=8, hsj_initial_evals=30, hsj_max_evals=100),
    apgd_steps=10, apgd_losses=("cross_entropy",),
)


def _numpy_model(m: nn.Module):
    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.from_numpy(np.array(a))).numpy()

    return predict


def _flags(model, x, y):
    res = evaluate_adversarial(model, x, y, PLAN, blackbox=_numpy_model(model), seed=0, progress=False)
    return {f["name"]: f for f in res["flags"]}, res


def test_flags_stay_quiet_on_a_normal_model(toy):
    net, x, y = toy
    flags, res = _flags(net, x, y)
    failed = {k: f["message"] for k, f in flags.items() if f["ok"] is not True}
    assert not failed
    assert res["worst_case"]["linf"]["robust_acc"][-1] == 0.0


def test_flags_fire_on_a_gradient_masked_model(toy):
    net, x, y = toy
    flags, res = _flags(Quantised(net).eval(), x, y)
    assert flags["no_zero_gradients"]["ok"] is False
    assert flags["large_eps"]["ok"] is False
    assert flags["blackbox_not_stronger"]["ok"] is False
    assert res["checks"]["blackbox_hsj_l2"]["bb_only_points"][-1] > 0
