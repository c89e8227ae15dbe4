import math

import pytest
import torch
import torch.nn.functional as F

from training.config import PROFILES, make_config
from training.loss import compression_penalty, shard_loss, total_loss
from training.optim import GammaSchedule, gamma_schedule, lr_factor


def test_penalty_is_mean_over_batch_and_dims():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert compression_penalty(z).item() == pytest.approx((1 + 4 + 9 + 16) / 4)


def test_total_loss_adds_gamma_times_penalty():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    z = torch.ones(2, 3) * 2
    loss, ce, pen = total_loss(logits, z, labels, gamma=0.5)
    expected_ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert ce.item() == pytest.approx(expected_ce, rel=1e-6)
    assert pen.item() == pytest.approx(4.0)
    assert loss.item() == pytest.approx(expected_ce + 0.5 * 4.0, rel=1e-6)


def test_geometric_schedule_per_epoch_and_cap():
    s = GammaSchedule(0.01, 1.05, 1e6, per="epoch")
    assert s.value(0, 999) == pytest.approx(0.01)
    assert s.value(10, 0) == pytest.approx(0.01 * 1.05**10)
    assert s.value(10_000, 0) == pytest.approx(1e6)


def test_schedule_per_step_reaches_cap_at_ramp_end():
    s = GammaSchedule.reaching_cap(0.01, 100.0, units=1000, per="step")
    assert s.value(0, 0) == pytest.approx(0.01)
    assert s.value(0, 500) == pytest.approx(1.0, rel=1e-9)  # geometric midpoint
    assert s.value(0, 1000) == pytest.approx(100.0)
    assert s.value(0, 5000) == pytest.approx(100.0)


def test_quick_profile_gamma_reaches_cap_at_half_of_training():
    cfg = make_config("quick", epochs=10)
    sched = gamma_schedule(cfg, steps_per_epoch=100)
    assert sched.value(4, 499) < cfg.gamma_cap
    assert sched.value(5, 500) == pytest.approx(cfg.gamma_cap)


def test_baselines_get_no_penalty():
    for variant in ("no_pen", "lin_pen", "nonlin_pen"):
        cfg = make_config("quick", variant=variant)
        assert gamma_schedule(cfg, 100).value(10, 1000) == 0.0


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="factor >= 1"):
        GammaSchedule(0.01, 0.5, 1.0)
    with pytest.raises(ValueError, match="per must be"):
        GammaSchedule(0.01, 1.1, 1.0, per="batch")


def test_paper_profile_lr_steps():
    cfg = make_config("paper")
    assert PROFILES["paper"]["epochs"] == 800
    assert lr_factor(cfg, 249) == 1.0
    assert lr_factor(cfg, 250) == 0.5
    assert lr_factor(cfg, 299) == 0.5
    assert lr_factor(cfg, 300) == 0.25


def test_cosine_lr_goes_from_lr_to_floor():
    cfg = make_config("quick", epochs=10)
    assert lr_factor(cfg, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, 10) == pytest.approx(cfg.lr_min / cfg.lr)
    assert all(lr_factor(cfg, e) > lr_factor(cfg, e + 1) for e in range(9))


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="paper, quick"):
        make_config("fast")


@pytest.mark.parametrize(("global_size", "world"), [(63, 2), (64, 2), (7, 3), (2, 3)])
def test_shard_losses_averaged_over_ranks_give_the_global_batch_gradient(global_size, world):
    """What DDP computes (the mean over ranks of each shard objective's gradient) equals the single-process gradient,
    for uneven shards and for a rank with no sample."""
    from training.distributed import DistContext, shard_bounds
    from training.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mlp", input_shape=(1, 8, 8), latent_dim=4))
    x, y = torch.rand(global_size, 1, 8, 8), torch.randint(0, 10, (global_size,))
    gamma = 0.7

    def grads(objective):
        model.zero_grad()
        objective.backward()
        return [p.grad.clone() for p in model.parameters()]

    logits, z = model(x)
    expected = grads(total_loss(logits, z, y, gamma)[0])
    per_rank, ce_sum = [], 0.0
    for r in range(world):
        lo, hi = shard_bounds(global_size, DistContext(r, world, r))
        logits, z = model(x[lo:hi])
        objective, _, ce, _ = shard_loss(logits, z, y[lo:hi], gamma, global_size, world)
        per_rank.append(grads(objective))
        ce_sum += ce.item() * (hi - lo)
    for i, g in enumerate(expected):
        torch.testing.assert_close(sum(rank[i] for rank in per_rank) / world, g, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        assert ce_sum / global_size == pytest.approx(F.cross_entropy(model(x)[0], y).item(), rel=1e-6)


def test_every_train_config_field_has_a_cli_flag():
    from dataclasses import fields

    from training.cli import build_parser
    from training.config import TrainConfig

    dests = {a.dest for a in build_parser()._actions}
    assert [f.name for f in fields(TrainConfig) if f.name not in dests] == []
    args = build_parser().parse_args(["--out", "x", "--lr-schedule", "step", "--lr-step-factor", "0.25"])
    assert args.lr_schedule == "step" and args.lr_step_factor == 0.25
