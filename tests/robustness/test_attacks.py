"""The typed attack registry: one calling convention, (len(eps), N) masks, and the sped-up Foolbox subclasses."""

from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch
from torch import nn

from robustness.attack_losses import log_ce, margin, stable_ce
from robustness.attacks import (
    REGISTRY,
    AttackBudget,
    L2DeepFool,
    LinfDeepFool,
    LinfPGD,
    LogitsOf,
    QueryCountingModel,
    get_spec,
    run_attack,
    white_box,
)
from training.models import ModelConfig, build_model

TINY = AttackBudget(
    pgd_steps=5,
    deepfool_steps=10,
    cw_binary_steps=2,
    cw_steps=5,
    fmn_steps=5,
    hsj_steps=2,
    hsj_initial_evals=10,
    hsj_max_evals=20,
    apgd_steps=5,
    fab_steps=5,
    square_queries=20,
)


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
    assert {
        "fgsm",
        "pgd_linf",
        "pgd_linf_margin",
        "pgd_l2",
        "pgd_l2_margin",
        "deepfool_l2",
        "deepfool_linf",
        "cw_l2",
        "fmn_l2",
        "fmn_linf",
        "hsj_l2",
        "apgd_ce_linf",
        "apgd_t_linf",
        "fab_t_linf",
        "square_linf",
        "apgd_ce_l2",
        "apgd_t_l2",
        "fab_t_l2",
        "square_l2",
    } <= set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.norm in ("linf", "l2") and spec.kind in ("fixed", "min_norm")
        assert spec.access in ("white", "black") and spec.tier in ("cheap", "expensive", "blackbox")
        if spec.library == "foolbox":
            assert isinstance(spec.build(TINY), fb.attacks.base.Attack)
    with pytest.raises(ValueError, match="unknown attack"):
        get_spec("nope")


def test_logits_of_reduces_a_classifier_or_a_logits_network_to_its_logits():
    cfg = ModelConfig(
        backbone="mlp",
        variant="bin_enc",
        num_classes=10,
        latent_dim=8,
        input_shape=(1, 8, 8),
        mean=[0.5],
        std=[0.25],
    )
    model, x = build_model(cfg).eval(), torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(LogitsOf(model)(x), model(x)[0])  # (logits, z) -> logits
        plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        torch.testing.assert_close(LogitsOf(plain)(x), plain(x))  # already logits: unchanged


def test_square_l2_refuses_images_below_its_minimum_size(toy):
    net, x, y = toy
    with pytest.raises(ValueError, match="at least 5x5"):
        run_attack(get_spec("square_l2"), white_box(net), x, y, [1.0], TINY)


@pytest.mark.parametrize(
    "name", [n for n in REGISTRY if n != "square_l2"]
)  # 4x4 toy: too small for Square L2
def test_every_attack_returns_masks_shaped_eps_by_n(toy, name):
    net, x, y = toy
    spec = get_spec(name)
    eps = [0.0, 0.1, 0.5] if spec.norm == "linf" else [0.0, 0.5, 2.0]
    model = (
        QueryCountingModel(lambda a: net(torch.from_numpy(a))[0].detach().numpy())
        if spec.access == "black"
        else white_box(net)
    )
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


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(L2DeepFool, fb.attacks.L2DeepFoolAttack), (LinfDeepFool, fb.attacks.LinfDeepFoolAttack)],
)
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


def test_stable_ce_keeps_a_gradient_where_float32_ce_has_exact_zeros():
    # margin 30: p_y rounds to 1 in float32, so d CE / d l_y = p_y - 1 is exactly 0 (the term that lowers the true
    # class is lost); the stable form keeps -sigmoid(-30), the known answer
    logits = torch.tensor([[30.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    (g32,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), logits)
    assert g32[0, 0] == 0.0
    (g,) = torch.autograd.grad(stable_ce(logits, y).sum(), logits)
    expected = float(torch.sigmoid(torch.tensor(-30.0, dtype=torch.float64)))
    np.testing.assert_allclose(g.numpy(), [[-expected, expected]], rtol=1e-5)
    np.testing.assert_allclose(float(stable_ce(logits, y)), expected, rtol=1e-5)  # softplus(-30) = CE
    torch.testing.assert_close(margin(logits, y).detach(), torch.tensor([-30.0]))


def test_log_ce_keeps_the_ce_direction_where_even_stable_ce_underflows_in_a_float32_network():
    # margin 200: sigmoid(-200) ~ 1e-87 is representable in float64 but 0 once cast back into a float32 network,
    # so the stable CE gives an input gradient of exactly 0; log CE = m + O(e^m) has d/dl = (-1, 1) (known answer)
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    x = torch.tensor([[200.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    (g_ce,) = torch.autograd.grad(stable_ce(lin(x), y).sum(), x)
    assert torch.count_nonzero(g_ce) == 0
    (g,) = torch.autograd.grad(log_ce(lin(x), y).sum(), x)
    np.testing.assert_allclose(g.numpy(), [[-1.0, 1.0]], atol=1e-6)
    # where CE is not saturated, log CE ascends in CE's direction: gradient = CE gradient / CE
    x2 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    ce2 = stable_ce(lin(x2), y)
    (g_ce2,) = torch.autograd.grad(ce2.sum(), x2)
    (g2,) = torch.autograd.grad(log_ce(lin(x2), y).sum(), x2)
    np.testing.assert_allclose(g2.numpy(), (g_ce2 / ce2.detach()).numpy(), rtol=1e-5)
    np.testing.assert_allclose(float(log_ce(lin(x2), y)), float(torch.log(ce2)), rtol=1e-6)
