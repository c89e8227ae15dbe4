"""Sanity flags: unit checks on numbers, then the whole adversarial pipeline on a normal and a gradient-masked toy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustness import sanity
from robustness.adversarial import AdversarialPlan, evaluate_adversarial
from robustness.attack_losses import LOSSES
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
    assert sanity.converged("c", {"x": 0.50}, {"x": 0.49}, 0.01).ok is True
    assert sanity.converged("c", {"x": 0.50}, {"x": 0.48}, 0.01).ok is False
    assert sanity.converged("c", {}, {}, 0.01).ok is None
    ones = np.ones(100)
    assert sanity.gradient_norms({"ce": ones, "margin": ones}).ok is True
    assert sanity.gradient_norms({"ce": np.r_[np.zeros(5), np.ones(95)], "margin": ones}).ok is False
    assert sanity.gradient_norms({"ce": ones, "margin": np.r_[np.full(5, 1e-40), np.ones(95)]}).ok is False
    assert sanity.attack_gaps({"ce vs margin": ([0.9, 0.5], [0.9, 0.45])}).ok is True
    assert sanity.attack_gaps({"ce vs margin": ([0.9, 0.5], [0.9, 0.2])}).ok is False
    assert sanity.autoattack_gain({"linf@0.1": 0.01}, 100).ok is True
    assert sanity.autoattack_gain({"linf@0.1": 0.05}, 100).ok is False
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
    from training.inference import to_tensor

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


class Saturated(nn.Module):
    """The same classifier with its logits scaled by 1e4: float64 softmax saturates, the margin does not."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1e4


PLAN = AdversarialPlan(
    eps_linf=[0, 0.05, 0.1, 0.2, 0.3],
    eps_l2=[0, 0.5, 1, 2, 4],
    attacks=(
        "fgsm",
        "pgd_linf",
        "pgd_linf_margin",
        "pgd_l2",
        "pgd_l2_margin",
        "deepfool_l2",
        "hsj_l2",
        "apgd_ce_linf",
    ),
    n_cheap=100,
    n_expensive=100,
    n_blackbox=20,
    budget=AttackBudget(pgd_steps=10, hsj_steps=8, hsj_initial_evals=30, hsj_max_evals=100),
    adaptive_eps_linf=(0.1,),
    adaptive_eps_l2=(1.0,),
    headline_linf=0.1,
    large_eps_l2=4.0,
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
    assert flags["gradient_norms"]["ok"] is False
    assert flags["large_eps_linf"]["ok"] is False
    assert flags["blackbox_not_stronger"]["ok"] is False
    assert res["checks"]["blackbox_hsj_l2"]["bb_only_points"][-1] > 0


def test_ce_margin_gap_fires_when_the_ce_attack_saturates(toy, monkeypatch):
    # logits x 1e4: float32 cross-entropy (what a naive evaluation ascends) has an exactly zero input gradient, so
    # CE-PGD stalls while margin-PGD does not: both flags fire. With the bench's own CE objective (log of the stable
    # CE) the same model is attacked properly and both flags stay quiet.
    net, x, y = toy
    sat = Saturated(net).eval()
    with monkeypatch.context() as m:
        m.setitem(
            LOSSES, "ce", lambda logits, labels: nn.functional.cross_entropy(logits, labels, reduction="none")
        )
        flags, _ = _flags(sat, x, y)
    assert flags["attack_gaps"]["ok"] is False
    assert flags["gradient_norms"]["ok"] is False
    flags, _ = _flags(sat, x, y)
    assert flags["attack_gaps"]["ok"] is True and flags["gradient_norms"]["ok"] is True
