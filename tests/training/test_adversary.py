"""``--adv-train``: the training adversary stays in its ball, raises the loss, and makes a model more robust."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from training.adversary import adversarial_examples
from training.checkpoint import load_run
from training.config import make_config
from training.evaluation import to_tensor
from training.train import train


def _pgd_robust_acc(net, x, y, eps: float) -> float:
    cfg = make_config("quick", adv_train="pgd", adv_eps=eps, adv_steps=20)
    net.eval()
    adv = adversarial_examples(net, x, y, cfg, torch.zeros_like(x))
    with torch.no_grad():
        return float((net(adv)[0].argmax(1) == y).float().mean())


def test_adversary_stays_in_the_ball_and_raises_the_loss(digits_run, digits_data):
    net, _, _ = load_run(digits_run)
    net.eval()
    x, y = to_tensor(digits_data.test.images[:200]), torch.from_numpy(digits_data.test.labels[:200])
    start = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    with torch.no_grad():
        clean = F.cross_entropy(net(x)[0], y)
    for kind in ("fgsm", "pgd"):
        cfg = make_config("quick", adv_train=kind, adv_eps=0.1, adv_steps=5)
        adv = adversarial_examples(net, x, y, cfg, start)
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            assert F.cross_entropy(net(adv)[0], y) > clean + 0.1
        assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="adversarial training"):
        adversarial_examples(net, x, y, dataclasses.replace(cfg, adv_train="nope"), start)


@pytest.mark.slow
def test_fast_adversarial_training_raises_robust_accuracy(tmp_path, digits_data, digits_recipe):
    torch.set_num_threads(1)
    recipe = {**digits_recipe, "variant": "no_pen"}
    train(make_config("quick", **recipe), tmp_path / "clean", data=digits_data, progress=False)
    train(make_config("quick", **recipe, adv_train="fgsm", adv_eps=0.1), tmp_path / "fat", data=digits_data,
          progress=False)
    x, y = to_tensor(digits_data.test.images), torch.from_numpy(digits_data.test.labels)
    clean_net, fat_net = load_run(tmp_path / "clean")[0], load_run(tmp_path / "fat")[0]
    assert load_run(tmp_path / "fat")[1].adv_train == "fgsm"
    ra_clean, ra_fat = _pgd_robust_acc(clean_net, x, y, 0.1), _pgd_robust_acc(fat_net, x, y, 0.1)
    assert ra_fat > ra_clean + 0.2, (ra_clean, ra_fat)
