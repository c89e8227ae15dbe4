"""The bench: cached-run lookup, CLI parsing, and a tiny end-to-end run on digits that writes the whole report."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from robustness import bench, compare, runs
from robustness.bench_cli import build_parser, config_from_args
from training.config import make_config


def _fake_run(path: Path, cfg, finished: bool = True, age_s: float = 10_000) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "model": {}}))
    (path / "checkpoint.pt").write_bytes(b"x")
    old = time.time() - age_s
    os.utime(path / "checkpoint.pt", (old, old))
    if finished:
        (path / "metrics.json").write_text("{}")
    return path


def test_cached_run_is_found_by_config_ignoring_device_and_threads(tmp_path):
    want = make_config("quick", dataset="fashion-mnist", variant="bin_enc", seed=0)
    saved = make_config(
        "quick", dataset="fashion-mnist", variant="bin_enc", seed=0, device="cuda", num_threads=1
    )
    run = _fake_run(tmp_path / runs.run_name(want), saved)
    assert runs.find_run(tmp_path, want) == run
    assert runs.ensure_run(tmp_path, want) == (run, "cached")
    # the conventional name is not required: any directory with the same config is reused
    other = make_config("quick", variant="no_pen", seed=3)
    moved = _fake_run(tmp_path / "somewhere_else", other)
    assert runs.find_run(tmp_path, other) == moved
    # a different training config is not a match
    assert runs.find_run(tmp_path, make_config("quick", variant="bin_enc", seed=0, lr=0.1)) is None


def test_missing_or_busy_runs_fail_clearly(tmp_path):
    cfg = make_config("quick", variant="lin_pen", seed=1)
    with pytest.raises(FileNotFoundError, match="python -m training"):
        runs.ensure_run(tmp_path, cfg, train_missing=False)
    _fake_run(tmp_path / runs.run_name(cfg), cfg, finished=False, age_s=5)
    with pytest.raises(runs.RunInProgressError, match="another process"):
        runs.ensure_run(tmp_path, cfg)


def test_evaluated_runs_define_the_recorded_dataset_and_one_bench_takes_one_dataset(tmp_path):
    digits = [
        runs.ModelRun(
            f"{v}_s0", make_config("quick", dataset="digits", backbone=b, variant=v), tmp_path, "given"
        )
        for v, b in (("bin_enc", "mlp"), ("no_pen", "cnn"))
    ]
    given = config_from_args(build_parser().parse_args(["--evaluate", "a", "--evaluate", "b"]))
    assert (given.dataset, given.backbone) == ("fashion-mnist", "cnn")  # the command line's defaults
    described = bench.described_by_runs(given, digits)
    assert (described.dataset, described.backbone) == ("digits", "cnn, mlp")
    assert described.profile == given.profile and described.adversarial == given.adversarial
    fashion = runs.ModelRun(
        "bin_enc_s1",
        make_config("quick", dataset="fashion-mnist", variant="bin_enc", seed=1),
        tmp_path,
        "given",
    )
    with pytest.raises(ValueError, match=r"digits \(bin_enc_s0, no_pen_s0\), fashion-mnist \(bin_enc_s1\)"):
        bench.described_by_runs(given, [*digits, fashion])
    searched = config_from_args(
        build_parser().parse_args(["--dataset", "digits"])
    )  # runs looked up by config
    assert bench.described_by_runs(searched, [fashion]) is searched


def test_cli_parsing_sets_the_plan():
    args = build_parser().parse_args(
        [
            "--variants",
            "bin_enc,no_pen",
            "--seeds",
            "0,1",
            "--n-samples",
            "60",
            "--eps",
            "0.3,0.1",
            "--attack-steps",
            "7",
            "--attacks",
            "fgsm,pgd_linf",
            "--ood-sets",
            "gaussian",
            "--adaptive-escalations",
            "5",
        ]
    )
    cfg = config_from_args(args, ["--x"])
    assert cfg.variants == ("bin_enc", "no_pen") and cfg.seeds == (0, 1)
    plan = cfg.adversarial
    assert (plan.n_cheap, plan.n_expensive, plan.n_blackbox) == (60, 30, 6)
    assert plan.eps_linf == [0.0, 0.1, 0.3] and plan.attacks == ("fgsm", "pgd_linf")
    assert plan.budget.pgd_steps == 7 and plan.adaptive.steps == 7 and plan.budget.apgd_steps == 35
    assert cfg.ood_sets == ("gaussian",) and plan.adaptive_escalations == 5
    assert config_from_args(build_parser().parse_args([])).adversarial.adaptive_escalations == 3
    thorough = config_from_args(build_parser().parse_args(["--thorough"]))
    assert (
        thorough.all_seeds
        and thorough.adversarial.n_cheap >= 1000
        and thorough.adversarial.n_expensive >= 1000
    )
    assert thorough.adversarial.budget.square_queries >= 5000 and thorough.adversarial.adaptive_eps_linf == ()
    with pytest.raises(ValueError, match="unknown attacks"):
        config_from_args(build_parser().parse_args(["--attacks", "nope"]))
    with pytest.raises(ValueError, match="--adaptive-escalations must be >= 1"):
        config_from_args(build_parser().parse_args(["--adaptive-escalations", "0"]))


def _as_lin_pen(digits_data, out: Path) -> Path:
    """A lin_pen digits run (same recipe as the session fixtures) for the ablation row."""
    import torch

    from training.train import train

    torch.set_num_threads(1)
    cfg = make_config(
        "quick",
        variant="lin_pen",
        dataset="digits",
        backbone="mlp",
        latent_dim=8,
        epochs=60,
        batch_size=64,
        lr=3e-3,
        head_lr=3e-3,
        gamma_cap=10.0,
        val_fraction=0.2,
        seed=0,
        num_threads=1,
    )
    train(cfg, out, data=digits_data, progress=False)
    return out


@pytest.mark.slow
def test_tiny_end_to_end_bench_on_digits(
    tmp_path,
    monkeypatch,
    digits_data,
    digits_run,
    digits_artifact,
    digits_baseline_run,
    digits_baseline_artifact,
):
    from robustness.results import load_results
    from serving.artifact_format import read_metadata

    run_dirs = []
    for src in (digits_run, digits_baseline_run):  # copies: the annex must not touch the shared fixtures
        run_dirs.append(tmp_path / "runs" / Path(src).name)
        shutil.copytree(src, run_dirs[-1])
    run_dirs.append(_as_lin_pen(digits_data, tmp_path / "runs" / "lin_pen"))
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # absolute paths under the working directory are written relative to it
    rc = bench.main(
        [
            "--run",
            str(run_dirs[0]),
            "--run",
            "runs/digits_mlp_no_pen",
            "--run",
            str(run_dirs[2]),
            "--out",
            "out",
            "--attacks",
            "fgsm,pgd_linf,pgd_linf_margin,deepfool_l2,apgd_t_linf",
            "--n-samples",
            "40",
            "--n-ood",
            "100",
            "--n-id",
            "200",
            "--attack-steps",
            "5",
            "--ood-sets",
            "letters,gaussian,inverted,mnist",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    res = load_results(out / "results.json")
    assert set(res["models"]) == {"bin_enc_s0", "no_pen_s0", "lin_pen_s0"}
    assert (res["config"]["dataset"], res["config"]["backbone"]) == (
        "digits",
        "mlp",
    )  # the runs', not the CLI's
    be = res["models"]["bin_enc_s0"]
    adv = be["adversarial"]
    ran = {
        "fgsm",
        "pgd_linf",
        "pgd_linf_margin",
        "pgd_linf_strong",
        "pgd_linf_margin_strong",
        "apgd_t_linf",
        "adaptive[vertex_distance]",
    }
    levels = adv["reject"]["vertex_distance"]["adaptive"]["linf"]["convergence"]["levels"]
    assert (
        levels
        and levels[0]["budget"]["steps"]
        == 2 * adv["reject"]["vertex_distance"]["adaptive"]["budget"]["steps"]
    )
    ran |= {f"adaptive_strong{i + 1}[vertex_distance]" for i, lv in enumerate(levels) if lv["points"] > 0}
    assert set(adv["worst_case"]["linf"]["attacks"]) == ran  # every L∞ attack that ran is in the worst case
    assert len(adv["worst_case"]["linf"]["robust_acc"]) == len(res["config"]["adversarial"]["eps_linf"])
    head = adv["headline"]["reject"]["vertex_distance"]["linf"]
    assert head["ci95"][0] <= head["value"] <= head["ci95"][1] and head["n"] == 20
    assert be["artifact"]["score"] == "vertex_distance"
    assert be["artifact"]["parity_with_torch"]["max_abs_diff_reliability"] < 1e-4
    assert set(res["models"]["lin_pen_s0"]["adversarial"]["reject"]) == {"max_softmax", "mahalanobis_latent"}
    assert {"letters", "gaussian", "inverted"} <= set(be["ood"])
    assert set(be["ood"]["gaussian"]) >= {
        "reliability",
        "max_softmax",
        "energy",
        "max_logit",
        "mahalanobis",
        "knn",
    }
    assert res["models"]["no_pen_s0"]["artifact"]["score"] == "max_softmax"
    assert adv["paper_deepfool"]["n"] == 20 and adv["paper_deepfool"]["mean_r_over_x"] > 0
    assert any(r["figure_a"].startswith("reject_linf") and r["b"] == "lin_pen_s0" for r in res["paired"])
    assert (
        len(adv["points"]) == adv["n"]["cheap"]
        and adv["points"] == res["models"]["no_pen_s0"]["adversarial"]["points"]
    )
    # robustness.compare on the bench's own file gives the bench's own pairing
    assert (
        compare.main(["out/results.json:bin_enc_s0", "out/results.json:no_pen_s0", "--json", "cmp.json"]) == 0
    )
    fields = ("figure_a", "figure_b", "n", "a_only", "b_only", "p_value")
    assert [[r[f] for f in fields] for r in json.loads(Path("cmp.json").read_text())["rows"]] == [
        [r[f] for f in fields] for r in res["paired"] if r["b"] == "no_pen_s0"
    ]
    md = (out / "report.md").read_text()
    assert "## Sanity flags" in md and "## OOD detection" in md and "robust_acc_bin_enc_s0.png" in md
    assert "(ablation)" in md and str(tmp_path) not in md  # no machine paths in the report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {
        "robust_acc_worst_case.png",
        "robust_acc_bin_enc_s0.png",
        "roc_bin_enc_s0.png",
        "reliability_hist_bin_enc_s0.png",
        "latent_hist_bin_enc_s0.png",
    } <= set(pngs)
    _, annex = read_metadata(run_dirs[0] / "model.onnx")
    assert annex["robustness"]["eps"]["linf"] == 0.05
    _, fixture_annex = read_metadata(digits_artifact)
    assert fixture_annex == {}


@pytest.mark.slow
def test_a_model_without_a_vertex_score_is_reported_and_the_others_measured(
    tmp_path, monkeypatch, capsys, digits_run, digits_baseline_run
):
    import torch

    from robustness.results import load_results

    broken, baseline = tmp_path / "runs" / "broken", tmp_path / "runs" / "no_pen"
    shutil.copytree(digits_run, broken)
    shutil.copytree(digits_baseline_run, baseline)
    (broken / "model.onnx").unlink(missing_ok=True)
    ckpt = torch.load(broken / "checkpoint.pt", weights_only=False)
    ckpt["model"][
        "latent.weight"
    ].zero_()  # every input on one latent point: one predicted class, no vertex per class
    torch.save(ckpt, broken / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    plan = [
        "--attacks",
        "fgsm",
        "--n-samples",
        "20",
        "--n-ood",
        "50",
        "--n-id",
        "100",
        "--attack-steps",
        "2",
        "--ood-sets",
        "gaussian",
        "--threads",
        "1",
        "--quiet",
    ]
    rc = bench.main(["--run", "runs/broken", "--run", "runs/no_pen", "--out", "out", *plan])
    assert rc == bench.EXIT_UNMEASURED
    assert "NOT MEASURED: bin_enc_s0" in capsys.readouterr().err
    res = load_results(tmp_path / "out" / "results.json")
    assert set(res["models"]) == {"no_pen_s0"} and res["paired"] == []
    gone = res["unmeasured"]["bin_enc_s0"]
    assert gone["run_dir"] == "runs/broken" and "no correctly classified" in gone["reason"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Models not measured" in md and "| bin_enc_s0 | `runs/broken` |" in md
    assert not (broken / "model.onnx").exists()  # no artifact without a score
    # nothing left to measure: the usual "error: ..." and exit status 2, no report
    assert bench.main(["--run", "runs/broken", "--out", "out2", *plan]) == 2
    assert "no model could be measured: bin_enc_s0" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
