"""``torchrun --nproc_per_node 2 -m robustness.bench`` gives the figures of a one-process bench on the same points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robustness import bench
from robustness.results import load_results

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--attacks",
    "fgsm,pgd_linf_margin,deepfool_l2,apgd_t_linf",
    "--n-samples",
    "30",
    "--n-ood",
    "60",
    "--n-id",
    "120",
    "--attack-steps",
    "4",
    "--ood-sets",
    "gaussian,inverted",
    "--threads",
    "1",
    "--quiet",
]
VOLATILE = {
    "seconds",
    "seconds_total",
    "ccat_seconds",
    "created_at",
    "environment",
    "exported_now",
    "loadavg_start",
    "loadavg_end",
}


def figures(obj):
    """``results.json`` without wall times, dates and the environment (what may differ between two runs)."""
    if isinstance(obj, dict):
        return {k: figures(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [figures(v) for v in obj]
    return obj


@pytest.mark.slow
def test_two_process_bench_equals_one_process(tmp_path, monkeypatch, digits_run, digits_baseline_run):
    run_args = []
    for src in (digits_run, digits_baseline_run):  # copies: the annex must not touch the shared fixtures
        dst = tmp_path / "runs" / Path(src).name
        shutil.copytree(src, dst)
        run_args += ["--evaluate", f"runs/{dst.name}"]  # torchrun would read --run as its own --run-path
    monkeypatch.chdir(tmp_path)
    assert bench.main([*run_args, "--out", "one", *ARGS]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "robustness.bench",
            *run_args,
            "--out",
            "two",
            *ARGS,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one = load_results(tmp_path / "one" / "results.json")
    two = load_results(tmp_path / "two" / "results.json")
    assert two["environment"]["world_size"] == 2 and one["environment"]["world_size"] == 1
    assert list(two["models"]) == list(one["models"]) == ["bin_enc_s0", "no_pen_s0"]
    for res in (one, two):  # the only intended difference: the output directory (and so the command line)
        del res["config"]["out"], res["config"]["command"]
    assert figures(two) == figures(one)
    assert (tmp_path / "two" / "report.md").is_file()


@pytest.mark.slow
def test_every_rank_reports_rank_zeros_error_and_exits_2(tmp_path):
    """A missing run: rank 0's error reaches the other ranks, which say it too instead of being stopped blind."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "--tee",
            "3",
            "-m",
            "robustness.bench",
            "--evaluate",
            "runs/missing",
            "--out",
            "out",
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    for rank in (0, 1):
        assert any(
            line.startswith(f"[default{rank}]:error:") and "runs/missing" in line for line in out.splitlines()
        ), out[-3000:]
    assert "exitcode  : 2" in out
    assert not (tmp_path / "out").exists()
