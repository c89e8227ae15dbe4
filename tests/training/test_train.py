"""Short real trainings on sklearn digits: end to end, resume == uninterrupted, NaN stops cleanly."""

import json

import pytest
import torch

from training.checkpoint import load_run
from training.config import make_config
from training.data import load_dataset
from training.epoch import TrainingDiverged
from training.train import train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_cfg(**kw):
    base = dict(dataset="digits", backbone="mlp", epochs=4, batch_size=64, num_threads=1, latent_dim=8)
    return make_config("quick", **{**base, **kw})


def test_end_to_end_training_on_digits(tmp_path, digits):
    cfg = small_cfg(epochs=30, lr=3e-3, head_lr=3e-3, gamma_cap=10.0)
    result = train(cfg, tmp_path / "run", data=digits, progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test_acc"] > 0.85
    for split in ("train", "val", "test"):
        assert 0.0 <= m[split]["same_encoding"] <= 1.0
    assert len(m["dimensions"]) == 8
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(30))
    assert json.loads(rows[-1])["gamma"] == pytest.approx(cfg.gamma_cap)
    model, saved_cfg, _ = load_run(tmp_path / "run")
    assert saved_cfg.epochs == 30
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["code_version"].startswith(("git:", "binenc ", "unknown"))  # provenance of the weights
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model(x)[0], result.model(x)[0])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, digits):
    cfg = small_cfg()
    full = train(cfg, tmp_path / "full", data=digits, progress=False)
    train(cfg, tmp_path / "split", data=digits, stop_after_epoch=1, progress=False)
    assert not (tmp_path / "split" / "metrics.json").exists()
    resumed = train(cfg, tmp_path / "split", resume=True, data=digits, progress=False)
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    rows = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1, 2, 3]


def test_existing_run_is_not_overwritten(tmp_path, digits):
    cfg = small_cfg(epochs=1)
    train(cfg, tmp_path / "r", data=digits, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "r", data=digits, progress=False)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, digits):
    cfg = small_cfg(epochs=3)
    train(cfg, tmp_path / "r", data=digits, stop_after_epoch=0, progress=False)
    before = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    bad = small_cfg(epochs=3, lr=float("nan"))
    # resume takes the saved config, so poison the saved one
    ckpt = dict(before, train_config={**before["train_config"], "lr": float("inf")})
    torch.save(ckpt, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(bad, tmp_path / "r", resume=True, data=digits, progress=False)
    after = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert after["epoch"] == 0
    for k, v in before["model"].items():
        assert torch.equal(v, after["model"][k])


def test_runs_are_reproducible(tmp_path, digits):
    cfg = small_cfg(epochs=2)
    a = train(cfg, tmp_path / "a", data=digits, progress=False)
    b = train(cfg, tmp_path / "b", data=digits, progress=False)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_random_shift_moves_content_and_is_deterministic():
    from training.augment import random_shift

    x = torch.zeros(4, 1, 6, 6)
    x[:, :, 2, 2] = 1.0
    a = random_shift(x, 1, torch.Generator().manual_seed(0))
    b = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert torch.all(a.sum(dim=(1, 2, 3)) == 1.0)  # a one-pixel shift keeps the dot inside
    assert random_shift(x, 0, torch.Generator()) is x
