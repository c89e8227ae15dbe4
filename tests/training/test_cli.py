"""``python -m training``: settings from a profile or from a run's config.json (``--config``), and its errors."""

from __future__ import annotations

import json

import torch

from training import cli
from training.config import make_config


def _settings(run) -> dict:
    return json.loads((run / "config.json").read_text())["train"]


def test_config_trains_a_run_again_bit_for_bit(digits_run, tmp_path):
    again = tmp_path / "again"
    assert cli.main(["--config", str(digits_run / "config.json"), "--out", str(again), "--quiet"]) == 0
    assert _settings(again) == _settings(digits_run)
    first, second = (
        torch.load(r / "checkpoint.pt", weights_only=False)["model"] for r in (digits_run, again)
    )
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (digits_run, again)]
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"]


def test_flags_beside_config_override_it(digits_run, tmp_path):
    args = cli.build_parser().parse_args(
        ["--config", str(digits_run / "config.json"), "--out", "x", "--epochs", "3", "--seed", "5"]
    )
    cfg = cli.train_config(args)
    assert (cfg.epochs, cfg.seed) == (3, 5)
    assert {k: v for k, v in cfg.to_dict().items() if k not in {"epochs", "seed"}} == {
        k: v for k, v in _settings(digits_run).items() if k not in {"epochs", "seed"}
    }
    # without --config: the quick profile on fashion-mnist with bin_enc, as before
    plain = cli.train_config(cli.build_parser().parse_args(["--out", "x"]))
    assert plain == make_config("quick") and (plain.dataset, plain.variant) == ("fashion-mnist", "bin_enc")


def test_bad_config_is_a_clear_error(digits_run, tmp_path, capsys):
    not_run = tmp_path / "list.json"
    not_run.write_text("[1, 2]")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    cases = {
        ("--config", str(digits_run / "config.json"), "--profile", "long"): "not both",
        ("--config", str(tmp_path / "missing.json")): "cannot read --config",
        ("--config", str(not_run)): "is not a run's config.json",
        ("--config", str(broken)): "is not JSON",
    }
    for argv, message in cases.items():
        assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
