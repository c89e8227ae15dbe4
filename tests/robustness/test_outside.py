"""Classifiers trained elsewhere: the feature hook, the factory refusal, the rejection-aware attack and the API."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from robustness import bench
from robustness.adaptive import AdaptiveBudget, adaptive_attack
from robustness.api import CallableScore
from robustness.attacks import AttackBudget, get_spec, run_attack, white_box
from robustness.ccat import ccat_threshold, confidence_thresholded
from robustness.reject_option import RejectOption
from training import export
from training.outside import FeatureModel, OutsideModelError, check_logits, load_outside
from training.posthoc import EnergyScore, KNNScore


class TwoHeads(nn.Module):
    """A CNN whose layers are not called in registration order: the head is registered before the body."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 6)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def test_feature_hook_default_is_the_input_of_the_last_linear_on_two_architectures():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 4, 4)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    logits, z = FeatureModel(mlp)(x)
    assert torch.equal(logits, mlp(x))
    assert torch.allclose(z, torch.relu(mlp[1](x.flatten(1))))
    cnn = TwoHeads()
    m = FeatureModel(cnn)
    assert m.feature_layer == "fc" and m.reads == "input"  # the last nn.Linear in module order, not the head
    _, z = m(x)
    assert torch.allclose(z, torch.relu(cnn.conv(x)).flatten(1))
    named = FeatureModel(cnn, "conv")  # a named layer: its output, flattened
    assert named(x)[1].shape == (5, 32)
    with pytest.raises(OutsideModelError, match="no such module"):
        FeatureModel(cnn, "nope")


@pytest.mark.parametrize(
    "out, match",
    [
        (torch.softmax(torch.randn(4, 3), 1), "probabilities"),
        (torch.log_softmax(torch.randn(4, 3), 1), "log-probabilities"),
        (torch.randn(4, 5), r"shape \(4, 5\)"),
        ((torch.randn(4, 3), torch.randn(4, 2)), "returned tuple"),
    ],
)
def test_check_logits_refuses_what_is_not_logits(out, match):
    with pytest.raises(OutsideModelError, match=match):
        check_logits(out, 4, 3, "toys:f")
    check_logits(torch.randn(4, 3), 4, 3, "toys:f")


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """An importable module of factories (8x8 digits: 64 pixels, 10 classes) and their weights."""
    (tmp_path / "outside_toys.py").write_text(
        textwrap.dedent("""
        from torch import nn
        def logits():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        def probs():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.Softmax(dim=1))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import outside_toys

    paths = {}
    for name in ("logits", "probs"):
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(getattr(outside_toys, name)().state_dict(), paths[name])
    return paths


def test_factory_that_returns_probabilities_is_refused_with_one_line(toys, tmp_path, capsys):
    argv = [
        "--model",
        "outside_toys:probs",
        "--weights",
        str(toys["probs"]),
        "--dataset",
        "digits",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: --model outside_toys:probs") and "probabilities" in err[0]
    )
    assert not (tmp_path / "out").exists()
    assert (
        export.main(
            [
                "--model",
                "outside_toys:probs",
                "--weights",
                str(toys["probs"]),
                "--dataset",
                "digits",
                "--out",
                str(tmp_path / "art"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probabilities" in err[0]


def test_weights_that_do_not_fit_and_bad_specs_are_refused(toys):
    with pytest.raises(OutsideModelError, match="no such file"):
        load_outside("outside_toys:logits", toys["probs"].with_name("missing.pt"), (1, 8, 8), 10)
    torch.save({"x": torch.zeros(1)}, toys["probs"].with_name("bad.pt"))
    with pytest.raises(OutsideModelError, match="do not fit"):
        load_outside("outside_toys:logits", toys["probs"].with_name("bad.pt"), (1, 8, 8), 10)
    with pytest.raises(OutsideModelError, match="PKG.MODULE:FACTORY"):
        load_outside("outside_toys", toys["logits"], (1, 8, 8), 10)
    with pytest.raises(OutsideModelError, match="no callable"):
        load_outside("outside_toys:nothing", toys["logits"], (1, 8, 8), 10)
    assert load_outside("outside_toys:logits", toys["logits"], (1, 8, 8), 10)(torch.rand(2, 1, 8, 8))[
        1
    ].shape == (2, 16)


def _toy():
    """Class 1 iff pixel0 + pixel1 > 1; the score accepts only points near their predicted class's centre."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-10.0, -10.0], [10.0, 10.0]]))
        net[1].bias.copy_(torch.tensor([10.0, -10.0]))
    centres = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    score = CallableScore(lambda logits, z, cls: -((z - centres[cls]) ** 2).sum(1) / 0.01)
    x = torch.tensor([[[[0.3, 0.45]]], [[[0.25, 0.5]]], [[[0.2, 0.55]]]])
    return FeatureModel(net).eval(), RejectOption("toy", score, 0.5), x, torch.zeros(3, dtype=torch.long)


def test_rejection_aware_attack_succeeds_where_a_plain_attack_is_rejected():
    net, option, x, y = _toy()
    assert not option.fooled(net, x, y).any()  # correct and accepted
    plain = run_attack(get_spec("pgd_linf"), white_box(net), x, y, [0.5], AttackBudget(pgd_steps=50), seed=0)
    assert plain.success[0].all()  # the plain attack misclassifies every point ...
    assert not option.fooled(net, plain.advs[0], y).any()  # ... but far from class 1's centre: all rejected
    res = adaptive_attack(net, option, x, y, [0.05, 0.5], "linf", AdaptiveBudget(steps=30, restarts=1))
    assert not res.success[0].any()  # too small a ball to cross
    assert res.success[1].all()  # misclassified AND accepted


def test_logistic_scores_rank_like_their_raw_score_and_attack_interface():
    torch.manual_seed(0)
    logits, z = torch.randn(50, 4), torch.randn(50, 6)
    e = EnergyScore().calibrated(logits.numpy(), z.numpy())
    rel = e(logits, z).reliability
    lse = torch.logsumexp(logits, 1)
    assert torch.equal(rel.argsort(), lse.argsort())
    assert torch.allclose(e.neg_log_reliability_to(logits, z, logits.argmax(1)), -rel.log(), atol=1e-5)
    assert torch.equal(e.accepted(logits, z, 0.5), rel >= 0.5)
    k = KNNScore(z[:30].numpy(), k=3).calibrated(logits.numpy(), z.numpy())
    assert k(logits, z[:30]).reliability.shape == (30,)
    far = 100 * torch.ones(1, 6) * torch.tensor([1, -1, 1, -1, 1, -1])  # not like the bank
    assert k(logits[:1], far).reliability < k(logits[:1], z[:1]).reliability


def test_ccat_threshold_and_rerr():
    rel = np.linspace(0, 1, 101)
    correct = np.ones(101, bool)
    tau = ccat_threshold(rel, correct)
    assert (rel[correct] >= tau).mean() >= 0.99 and (rel[correct] > tau).mean() < 0.99
    wrong = np.array([1, 0, 0, 0], bool)
    clean_pass = np.array([1, 1, 0, 1], bool)
    fooled = np.array([0, 1, 1, 0], bool)  # the third: rejected clean, its adversarial passes
    err, rerr = confidence_thresholded(wrong, clean_pass, fooled)
    assert (err["k"], err["n"]) == (1, 3)
    assert (rerr["k"], rerr["n"]) == (3, 4)
