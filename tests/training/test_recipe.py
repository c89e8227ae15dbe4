"""The default recipe on any dataset size: the small-data rule, the unchanged Fashion-MNIST schedule, the collapse
check (one line, exit 1, run kept; export refuses it) and the README's digits example."""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from training import cli
from training import export as export_cli
from training.collapse import collapse_verdict
from training.config import TrainConfig, make_config
from training.optim import GammaSchedule, gamma_schedule, lr_factor, resolve_schedule, steps_per_epoch

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "docs" / "runs"


def _recorded(name: str) -> tuple[dict, dict, list[dict]]:
    run = RUNS / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text()), rows


def test_fashion_mnist_quick_schedule_is_unchanged():
    """The default command on Fashion-MNIST resolves to the recorded quick runs' settings: same epochs, gamma per
    step and learning rates as their metrics.jsonl shows, epoch by epoch."""
    config, metrics, rows = _recorded("fashion-mnist_cnn_quick_bin_enc_s0")
    n_train = metrics["train"]["n"]
    args = cli.build_parser().parse_args(["--out", "x"])
    cfg = resolve_schedule(cli.train_config(args), n_train)
    assert cfg.min_steps == 3000 and steps_per_epoch(cfg, n_train) * cfg.epochs > cfg.min_steps
    resolved = {k: v for k, v in cfg.to_dict().items() if k in config["train"]}
    assert resolved == {**config["train"], "latent_dim": None}  # the width comes from 10 classes: 8
    schedule = gamma_schedule(cfg, steps_per_epoch(cfg, n_train))
    spe = steps_per_epoch(cfg, n_train)
    for row in rows:
        e = row["epoch"]
        assert schedule.value(e, (e + 1) * spe - 1) == pytest.approx(row["gamma"], rel=1e-12)
        assert (
            cfg.lr * lr_factor(cfg, e) == pytest.approx(row["lr"], rel=1e-12)
            and row["head_lr"] == cfg.head_lr
        )


def test_every_recorded_run_resolves_to_itself():
    """``python -m training --config docs/runs/NAME/config.json`` trains what was recorded (the rule adds nothing to a
    run of enough steps, and a recorded config has no min_steps)."""
    configs = sorted(RUNS.glob("*/config.json")) + sorted((REPO / "research" / "runs").glob("*/config.json"))
    assert configs
    for path in configs:
        cfg = TrainConfig.from_dict(json.loads(path.read_text())["train"])
        assert cfg.dataset == "fashion-mnist", path  # 60,000 training images less the validation split
        n_train = 60_000 - math.ceil(cfg.val_fraction * 60_000)
        assert resolve_schedule(cfg, n_train) == cfg, path


def test_small_dataset_trains_more_steps_with_a_lower_cap():
    cfg = make_config("quick", dataset="digits")
    small = resolve_schedule(cfg, 1294)  # sklearn digits' training split: 11 steps per epoch
    assert small.epochs == 273 and small.epochs * 11 >= 3000 > (small.epochs - 1) * 11
    assert small.gamma_cap == pytest.approx(100 * 20 / 273)
    assert resolve_schedule(small, 1294) == small  # a resolved config (config.json) resolves to itself
    ramp = gamma_schedule(small, 11)
    assert ramp.value(0, round(0.5 * 273 * 11)) == pytest.approx(
        small.gamma_cap
    )  # reached half-way, as before
    tiny = resolve_schedule(cfg, 40)
    assert tiny.epochs == 3000 and tiny.gamma_cap == pytest.approx(100 * 20 / 3000)
    exact = make_config("quick", dataset="digits", epochs=5)  # an explicit epoch count is trained exactly
    assert exact.min_steps == 0 and resolve_schedule(exact, 1294) == exact
    assert isinstance(GammaSchedule.reaching_cap(0.01, small.gamma_cap, 10), GammaSchedule)


def _metrics(codes: int, final: float, k: int = 10) -> dict:
    return {"num_classes": k, "val_acc": final, "train": {"distinct_class_codes": codes}}


def test_collapse_verdict():
    history = [{"epoch": 0, "val_acc": 0.5}, {"epoch": 1, "val_acc": 0.89}, {"epoch": 2, "val_acc": 0.12}]
    assert collapse_verdict(_metrics(10, 0.88), history, "bin_enc") is None
    line = collapse_verdict(_metrics(1, 0.12), history, "bin_enc")
    assert (
        line.startswith(
            "the run collapsed: 1 distinct class codes for 10 classes; validation accuracy 0.1200 far "
            "below its peak 0.8900 (epoch 2"
        )
        and "\n" not in line
    )
    assert "distinct" in collapse_verdict(_metrics(9, 0.85), history, "bin_enc")
    assert collapse_verdict(_metrics(9, 0.85), history, "no_pen") is None  # codes count for bin_enc only
    # half of what was learnt above chance: 0.1 + 0.5 * (0.89 - 0.1) = 0.495
    assert collapse_verdict(_metrics(10, 0.50), history, "lin_pen") is None
    assert "far below" in collapse_verdict(_metrics(10, 0.49), history, "lin_pen")


def test_collapsing_run_exits_1_keeps_the_run_and_export_refuses_it(tmp_path, capsys):
    """The README's digits command at exactly the quick profile's 20 epochs (240 steps, cap 100) collapses."""
    out = tmp_path / "collapsed"
    code = cli.main(
        [
            "--dataset",
            "digits",
            "--backbone",
            "mlp",
            "--epochs",
            "20",
            "--out",
            str(out),
            "--quiet",
            "--threads",
            "1",
            "--export",
        ]
    )
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1, captured
    assert (
        len(lines) == 1
        and lines[0].startswith("error: the run collapsed: ")
        and "distinct class codes" in lines[0]
    )
    assert (out / "checkpoint.pt").is_file() and not (out / "model.onnx").exists()  # kept, not exported
    assert json.loads((out / "metrics.json").read_text())["collapse"] == lines[0].removeprefix("error: ")
    assert export_cli.main([str(out)]) == 2
    assert capsys.readouterr().err.strip() == lines[0]
    assert not (out / "model.onnx").exists()


def readme_digits_command() -> str:
    text = (REPO / "README.md").read_text()
    found = re.findall(r"^python -m training --dataset digits --backbone mlp [^\n#]*--export", text, re.M)
    assert len(found) == 1, "the README's digits example is gone or ambiguous"
    return found[0].strip()


def test_readme_digits_example_exports_a_good_model(tmp_path, monkeypatch, capsys):
    """The README's small-data command, exactly (run from a scratch folder): test accuracy >= 0.90, 10 distinct
    codes, a model.onnx that the service's loader accepts with the class names."""
    from serving.artifact_format import read_metadata

    argv = shlex.split(readme_digits_command())
    assert argv[:3] == ["python", "-m", "training"]
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv[3:]) == 0, capsys.readouterr().err
    out = tmp_path / argv[argv.index("--out") + 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.90 and metrics["collapse"] is None
    assert metrics["train"]["distinct_class_codes"] == 10
    md, _ = read_metadata(out / "model.onnx", verify=True)
    assert md["classes"] == [str(i) for i in range(10)] and md["input"]["shape"] == [1, 8, 8]


def _parser_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("ArgumentParser", "add_parser")
        ):
            yield node


def test_every_command_line_refuses_abbreviations(capsys):
    missing = []
    for folder in ("training", "serving", "robustness", "scripts", "research"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for call in _parser_calls(ast.parse(path.read_text())):
                ok = any(
                    k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in call.keywords
                )
                if not ok:
                    missing.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not missing, f"argparse without allow_abbrev=False: {missing}"
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--out", "x", "--epoch", "2"])
    assert exc.value.code == 2 and "unrecognized arguments: --epoch 2" in capsys.readouterr().err


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["--dataset", "mnist", "--out", str(out), "--quiet"]) == 2  # mnist needs --data-dir
    assert capsys.readouterr().err.startswith("error: ") and not out.exists()
    assert cli.main(["--out", str(out), "--resume", "--quiet"]) == 2  # nothing to resume
    assert "no checkpoint" in capsys.readouterr().err and not out.exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's")
    assert cli.main(["--dataset", "mnist", "--out", str(kept), "--quiet"]) == 2
    assert {p.name for p in kept.iterdir()} <= {
        "notes.txt",
        ".writer.lock",
    }  # a folder it did not create: kept


def test_the_bench_finds_a_small_dataset_run_by_the_config_that_asked_for_it(tmp_path):
    """A digits run records the resolved epochs and cap; the bench still finds it by the profile's config."""
    from robustness import runs

    asked = make_config("quick", dataset="digits", backbone="mlp")
    resolved = replace(resolve_schedule(asked, 1294), latent_dim=8)
    run = tmp_path / "digits_mlp_quick_bin_enc_s0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": resolved.to_dict()}))
    (run / "metrics.json").write_text("{}")
    assert runs.find_run(tmp_path, asked) == run and runs.finished_seeds(tmp_path, asked) == [0]
    assert runs.find_run(tmp_path, replace(asked, gamma_cap=50.0)) is None  # another cap is another run
