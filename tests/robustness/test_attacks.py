"""The typed attack registry: one calling convention, (len(eps), N) masks, and the sped-up Foolbox subclasses."""

from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch
from torch import nn

from robustness.attacks import (
    REGISTRY,
    AttackBudget,
    L2DeepFool,
    LinfDeepFool,
    LinfPGD,
    QueryCountingModel,
    SoftmaxReliability,
    VertexReliability,
    adaptive_reject_pgd,
    get_spec,
    run_attack,
    white_box,
)

TINY = AttackBudget(pgd_steps=5, deepfool_steps=10, cw_binary_steps=2, cw_steps=5, fmn_steps=5, hsj_steps=2,
                    hsj_initial_evals=10, hsj_max_evals=20)


class LatentNet(nn.Module):
    """A small MLP returning (logits, z) like training.models.Classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 3))
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        z = self.body(x)
        return self.head(z), z


def quadrant_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4x4 images; the label is the brightest 2x2 quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    q = x.unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2)).flatten(1)
    return x, q.argmax(1)


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    net = LatentNet()
    xt, yt = quadrant_task(512, 0)
    opt = torch.optim.Adam(net.parameters(), 3e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt)[0], yt).backward()
        opt.step()
    net.eval()
    x, _ = quadrant_task(12, 1)
    with torch.no_grad():
        y = net(x)[0].argmax(1)  # every point is "correctly classified"
    assert len(set(y.tolist())) >= 3
    return net, x, y


def test_registry_is_typed_and_complete():
    assert {"fgsm", "pgd_linf", "pgd_l2", "deepfool_l2", "deepfool_linf", "cw_l2", "fmn_l2", "fmn_linf",
            "hsj_l2"} <= set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.norm in ("linf", "l2") and spec.kind in ("fixed", "min_norm")
        assert spec.access in ("white", "black") and spec.tier in ("cheap", "expensive", "blackbox")
        assert isinstance(spec.build(TINY), fb.attacks.base.Attack)
    with pytest.raises(ValueError, match="unknown attack"):
        get_spec("nope")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_attack_returns_masks_shaped_eps_by_n(toy, name):
    net, x, y = toy
    spec = get_spec(name)
    eps = [0.0, 0.1, 0.5] if spec.norm == "linf" else [0.0, 0.5, 2.0]
    model = QueryCountingModel(lambda a: net(torch.from_numpy(a))[0].detach().numpy()) \
        if spec.access == "black" else white_box(net)
    out = run_attack(spec, model, x, y, eps, TINY, seed=0)
    assert out.success.shape == (3, len(x)) and out.success.dtype == bool
    assert not out.success[0].any()  # nothing is adversarial at ε = 0 (all points are correct)
    assert len(out.advs) == 3 and all(a.shape == x.shape for a in out.advs)
    for e, a in zip(eps, out.advs, strict=True):
        delta = (a - x).flatten(1)
        size = delta.abs().amax(1) if spec.norm == "linf" else delta.norm(dim=1)
        assert (size <= e + 1e-5).all()
    if spec.kind == "min_norm":
        assert out.min_norm.shape == (len(x),)
    if spec.access == "black":
        assert out.queries > 0


def test_deterministic_for_a_seed(toy):
    net, x, y = toy
    a = run_attack(get_spec("pgd_linf"), white_box(net), x, y, [0.05, 0.2], TINY, seed=3)
    b = run_attack(get_spec("pgd_linf"), white_box(net), x, y, [0.05, 0.2], TINY, seed=3)
    np.testing.assert_array_equal(a.success, b.success)
    torch.testing.assert_close(a.advs[1], b.advs[1])


@pytest.mark.parametrize(("ours", "theirs"), [(L2DeepFool, fb.attacks.L2DeepFoolAttack),
                                              (LinfDeepFool, fb.attacks.LinfDeepFoolAttack)])
def test_active_set_deepfool_matches_foolbox(toy, ours, theirs):
    net, x, y = toy
    fm = white_box(net)
    raw_a, _, ok_a = ours(steps=20, candidates=4)(fm, x, y, epsilons=[None])
    raw_b, _, ok_b = theirs(steps=20, candidates=4)(fm, x, y, epsilons=[None])
    assert torch.equal(ok_a, ok_b)
    torch.testing.assert_close(raw_a[0], raw_b[0], atol=1e-5, rtol=1e-4)


def test_early_stopping_pgd_is_at_least_as_strong_as_foolbox(toy):
    net, x, y = toy
    fm = white_box(net)
    for eps in (0.05, 0.1, 0.3):
        torch.manual_seed(0)
        _, _, ours = LinfPGD(steps=10, rel_stepsize=0.25)(fm, x, y, epsilons=eps)
        torch.manual_seed(0)
        _, _, ref = fb.attacks.LinfPGD(steps=10, rel_stepsize=0.25)(fm, x, y, epsilons=eps)
        assert ours.sum() >= ref.sum()


def test_adaptive_attack_counts_only_accepted_wrong_predictions(toy):
    net, x, y = toy
    never = SoftmaxReliability(threshold=1.1)  # nothing can be accepted
    assert not adaptive_reject_pgd(net, never, x, y, [0.0, 0.3, 1.0], steps=5).any()
    always = SoftmaxReliability(threshold=0.0)  # everything is accepted: any misclassification counts
    broken = adaptive_reject_pgd(net, always, x, y, [0.0, 0.3, 1.0], steps=5)
    assert broken.shape == (3, len(x)) and not broken[0].any()
    assert (broken[1] <= broken[2]).all() and broken[2].any()


def test_vertex_reliability_is_exp_of_minus_rms_distance():
    # identity whitening and centres on the ideal vertices: dist_class_centre = RMS distance to the vertex
    rel = VertexReliability(0.5, t=np.zeros(2), a=np.ones(2), centres=np.array([[1, 1], [-1, -1.0]]),
                            whiten=np.eye(2))
    z = torch.tensor([[1.0, 1.0], [0.0, 0.0], [-1.0, -3.0]])
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(rel.score(logits, z), torch.exp(-torch.tensor([0.0, 1.0, 2.0**0.5])))
    assert rel.accepted(logits, z).tolist() == [True, False, False]
    torch.testing.assert_close(rel.neg_log_for(logits, z, torch.tensor([1, 1, 1])),
                               torch.tensor([2.0, 1.0, 2.0**0.5]))


def test_vertex_reliability_uses_the_whitening():
    # whitening diag(1, 4): a unit step in dimension 1 costs four times one in dimension 0
    rel = VertexReliability(0.5, t=np.zeros(2), a=np.ones(2), centres=np.array([[0.0, 0.0]]),
                            whiten=np.diag([1.0, 4.0]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = rel.neg_log_for(torch.zeros(2, 1), z, torch.tensor([0, 0]))
    torch.testing.assert_close(d, torch.tensor([1.0, 4.0]) / 2.0**0.5)
