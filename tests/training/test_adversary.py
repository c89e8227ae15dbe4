"""``--adv-train``: the training adversary stays in its ball, raises the loss, and makes a model more robust; the
per-epoch robust check and ``--adv-select robust``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from research.scripts import robust_check
from training.adversary import adversarial_examples, robust_accuracy
from training.checkpoint import load_run
from training.cli import summary
from training.config import make_config
from training.inference import to_tensor
from training.optim import full_gamma_epoch
from training.train import train


def test_adversary_stays_in_the_ball_and_raises_the_loss(digits_run, digits_data):
    net, _, _ = load_run(digits_run)
    net.eval()
    x, y = to_tensor(digits_data.test.images[:200]), torch.from_numpy(digits_data.test.labels[:200])
    start = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    with torch.no_grad():
        clean = F.cross_entropy(net(x)[0], y)
    for kind, radius in (
        ("fgsm", 0.1),
        ("pgd", 0.1),
        ("nfgsm", 0.3),
    ):  # N-FGSM: noise 2·eps + step eps, unprojected
        cfg = make_config("quick", adv_train=kind, adv_eps=0.1, adv_steps=5)
        adv = adversarial_examples(net, x, y, cfg, start)
        reach = float((adv - x).abs().max())
        assert reach <= radius + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert (
            reach > radius - 0.01
        )  # the whole radius is used (N-FGSM is not projected back onto the eps-ball)
        with torch.no_grad():
            assert F.cross_entropy(net(adv)[0], y) > clean + 0.1
        assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="unknown adv_train 'nope'; expected one of fgsm, nfgsm, pgd"):
        dataclasses.replace(cfg, adv_train="nope")  # refused by the config, before any adversary runs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fgsm", "nfgsm"])
def test_single_step_adversarial_training_raises_robust_accuracy(tmp_path, digits_data, digits_recipe, kind):
    torch.set_num_threads(1)
    recipe = {**digits_recipe, "variant": "no_pen"}
    train(make_config("quick", **recipe), tmp_path / "clean", data=digits_data, progress=False)
    train(
        make_config("quick", **recipe, adv_train=kind, adv_eps=0.1),
        tmp_path / "fat",
        data=digits_data,
        progress=False,
    )
    x, y = to_tensor(digits_data.test.images), torch.from_numpy(digits_data.test.labels)
    clean_net, fat_net = load_run(tmp_path / "clean")[0], load_run(tmp_path / "fat")[0]
    assert load_run(tmp_path / "fat")[1].adv_train == kind
    attack = make_config("quick", adv_eps=0.1)  # robust_accuracy runs its own PGD-10 at adv_eps
    ra_clean, ra_fat = robust_accuracy(clean_net, x, y, attack), robust_accuracy(fat_net, x, y, attack)
    assert ra_fat > ra_clean + 0.2, (ra_clean, ra_fat)


def test_robust_check_is_clean_accuracy_at_zero_radius_and_lower_above(digits_run, digits_data):
    net, cfg, _ = load_run(digits_run)
    x, y = to_tensor(digits_data.val.images), torch.from_numpy(digits_data.val.labels)
    with torch.no_grad():
        clean = int((net.eval()(x)[0].argmax(1) == y).sum()) / len(y)
    net.train()
    at_zero = robust_accuracy(net, x, y, dataclasses.replace(cfg, adv_eps=0.0), batch_size=100)
    assert net.training  # the check leaves the mode it found
    assert at_zero == pytest.approx(clean, abs=1e-9)
    attacked = robust_accuracy(net, x, y, dataclasses.replace(cfg, adv_eps=0.1))
    assert attacked < clean - 0.1
    assert attacked == robust_accuracy(
        net, x, y, dataclasses.replace(cfg, adv_eps=0.1)
    )  # seeded: the same every epoch


def test_selection_window_starts_where_gamma_reaches_its_cap():
    quick = make_config("quick")
    assert full_gamma_epoch(quick, 469) == 10  # ramp 0.5 of 20 epochs, per step: cap at step 4690
    assert (
        full_gamma_epoch(dataclasses.replace(quick, variant="no_pen"), 469) == 10
    )  # baselines: the same epochs
    assert full_gamma_epoch(make_config("long"), 469) == 30
    assert (
        full_gamma_epoch(make_config("paper", epochs=100), 469) == 99
    )  # 0.01 * 1.05**99 < 1e6: never capped
    assert full_gamma_epoch(make_config("paper"), 469) == 378  # per epoch: 0.01 * 1.05**e >= 1e6 from e = 378


def test_robust_selection_keeps_the_best_checked_epoch_and_resumes(tmp_path, digits_data, digits_recipe):
    torch.set_num_threads(1)
    cfg = make_config(
        "quick",
        **{**digits_recipe, "epochs": 12},
        adv_train="fgsm",
        adv_eps=0.1,
        adv_check=200,
        adv_select="robust",
    )
    full = train(cfg, tmp_path / "full", data=digits_data, progress=False)
    history = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 12 and all(0 <= r["val_robust_acc"] <= 1 for r in history)
    first = full_gamma_epoch(cfg, math.ceil(len(digits_data.train) / cfg.batch_size))
    eligible = [r for r in history if r["epoch"] >= first]
    best = max(eligible, key=lambda r: r["val_robust_acc"])  # the first of equals, as training keeps it
    sel = full.metrics["adv_selection"]
    assert (sel["epoch"], sel["val_robust_acc"], sel["from_epoch"]) == (
        best["epoch"],
        best["val_robust_acc"],
        first,
    )
    # the run's model is the selected epoch's: its check gives the recorded figure again
    net, saved_cfg, ckpt = load_run(tmp_path / "full")
    assert ckpt["selected_epoch"] == best["epoch"] and saved_cfg.adv_select == "robust"
    x, y = to_tensor(digits_data.val.images[:200]), torch.from_numpy(digits_data.val.labels[:200])
    assert robust_accuracy(net, x, y, saved_cfg, seed=saved_cfg.seed) == best["val_robust_acc"]
    assert f"kept_epoch={best['epoch'] + 1} " in summary(
        str(tmp_path / "full"), full.metrics
    )  # the CLI's last line
    # research/scripts/robust_check.py reads the same figures back (table and plot)
    out = robust_check.table([robust_check.load(tmp_path / "full")])
    assert f"kept epoch: {best['epoch'] + 1}" in out and f"{best['val_robust_acc']:.4f}" in out
    robust_check.main([str(tmp_path / "full"), "--out", str(tmp_path / "check.png")])
    assert (tmp_path / "check.png").read_bytes()[:4] == b"\x89PNG"
    # interrupted inside the window and resumed: the same choice and weights
    train(cfg, tmp_path / "split", data=digits_data, stop_after_epoch=first + 1, progress=False)
    resumed = train(cfg, tmp_path / "split", resume=True, data=digits_data, progress=False)
    assert resumed.metrics["adv_selection"] == sel
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_robust_check_script_refuses_runs_without_the_check(digits_run):
    with pytest.raises(SystemExit, match="no val_robust_acc"):
        robust_check.load(digits_run)


def test_robust_selection_needs_the_check(tmp_path, digits_data, digits_recipe):
    for bad in (
        dict(adv_select="robust"),
        dict(adv_select="robust", adv_train="fgsm", adv_check=0),
        dict(adv_select="best"),
    ):
        with pytest.raises(ValueError, match="adv_select|adv-select"):
            train(
                make_config("quick", **digits_recipe, **bad), tmp_path / "x", data=digits_data, progress=False
            )
