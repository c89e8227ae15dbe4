"""The bench: cached-run lookup, CLI parsing, and a tiny end-to-end run on digits that writes the whole report."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from robustness import bench
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
    saved = make_config("quick", dataset="fashion-mnist", variant="bin_enc", seed=0, device="cuda", num_threads=1)
    run = _fake_run(tmp_path / bench.run_name(want), saved)
    assert bench.find_run(tmp_path, want) == run
    assert bench.ensure_run(tmp_path, want) == (run, "cached")
    # the conventional name is not required: any directory with the same config is reused
    other = make_config("quick", variant="no_pen", seed=3)
    moved = _fake_run(tmp_path / "somewhere_else", other)
    assert bench.find_run(tmp_path, other) == moved
    # a different training config is not a match
    assert bench.find_run(tmp_path, make_config("quick", variant="bin_enc", seed=0, lr=0.1)) is None


def test_missing_or_busy_runs_fail_clearly(tmp_path):
    cfg = make_config("quick", variant="lin_pen", seed=1)
    with pytest.raises(FileNotFoundError, match="python -m training"):
        bench.ensure_run(tmp_path, cfg, train_missing=False)
    _fake_run(tmp_path / bench.run_name(cfg), cfg, finished=False, age_s=5)
    with pytest.raises(bench.RunInProgressError, match="another process"):
        bench.ensure_run(tmp_path, cfg)


def test_cli_parsing_sets_the_plan():
    args = bench.build_parser().parse_args(
        ["--variants", "bin_enc,no_pen", "--seeds", "0,1", "--n-samples", "60", "--eps", "0.3,0.1",
         "--attack-steps", "7", "--attacks", "fgsm,pgd_linf", "--ood-sets", "gaussian"])
    cfg = bench.config_from_args(args, ["--x"])
    assert cfg.variants == ("bin_enc", "no_pen") and cfg.seeds == (0, 1)
    plan = cfg.adversarial
    assert (plan.n_cheap, plan.n_expensive, plan.n_blackbox) == (60, 30, 6)
    assert plan.eps_linf == [0.0, 0.1, 0.3] and plan.attacks == ("fgsm", "pgd_linf")
    assert plan.budget.pgd_steps == 7 and plan.adaptive_steps == 7 and plan.apgd_steps == 14
    assert cfg.ood_sets == ("gaussian",)
    with pytest.raises(ValueError, match="unknown attacks"):
        bench.config_from_args(bench.build_parser().parse_args(["--attacks", "nope"]))


@pytest.mark.slow
def test_tiny_end_to_end_bench_on_digits(tmp_path, digits_run, digits_artifact, digits_baseline_run,
                                         digits_baseline_artifact):
    from robustness.report import load_results
    from serving.artifact import read_metadata

    runs = []
    for src in (digits_run, digits_baseline_run):  # copies: the annex must not touch the shared fixtures
        runs.append(tmp_path / "runs" / Path(src).name)
        shutil.copytree(src, runs[-1])
    out = tmp_path / "out"
    rc = bench.main(["--run", str(runs[0]), "--run", str(runs[1]), "--out", str(out), "--attacks", "fgsm,pgd_linf",
                     "--n-samples", "40", "--n-ood", "100", "--n-id", "200", "--attack-steps", "5",
                     "--ood-sets", "letters,gaussian,inverted,mnist", "--threads", "1", "--quiet"])
    assert rc == 0
    res = load_results(out / "results.json")
    assert set(res["models"]) == {"bin_enc_s0", "no_pen_s0"}
    be = res["models"]["bin_enc_s0"]
    adv = be["adversarial"]
    assert set(adv["attacks"]) == {"fgsm", "pgd_linf"}
    assert len(adv["worst_case"]["linf"]["robust_acc"]) == len(res["config"]["adversarial"]["eps_linf"])
    assert adv["adaptive"] is not None and be["artifact"]["score"] == "vertex_distance"
    assert be["artifact"]["parity_with_torch"]["max_abs_diff_reliability"] < 1e-4
    assert {"letters", "gaussian", "inverted"} <= set(be["ood"])
    assert set(be["ood"]["gaussian"]) >= {"reliability", "max_softmax", "energy", "max_logit", "mahalanobis", "knn"}
    assert 0.0 <= be["ood"]["gaussian"]["reliability"]["auroc"] <= 1.0
    assert res["models"]["no_pen_s0"]["artifact"]["score"] == "max_softmax"
    assert not any(r["claim"].startswith("DeepFool") for r in res["paper_comparison"]["rows"])  # none ran
    md = (out / "report.md").read_text()
    assert "## Sanity flags" in md and "## OOD detection" in md and "robust_acc_bin_enc_s0.png" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"robust_acc_worst_case.png", "robust_acc_bin_enc_s0.png", "roc_bin_enc_s0.png",
            "reliability_hist_bin_enc_s0.png", "latent_hist_bin_enc_s0.png"} <= set(pngs)
    _, annex = read_metadata(runs[0] / "model.onnx")
    assert annex["robustness"]["robust_acc_linf"]["eps"] == 0.1
    _, fixture_annex = read_metadata(digits_artifact)
    assert fixture_annex == {}
