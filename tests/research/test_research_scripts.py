"""The research scripts against the data committed beside them (research/), run as the pages say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = [
    "bench_epoch_time",
    "bench_plots",
    "max_softmax_ties",
    "quick_profile_sweep",
    "regimes",
    "robust_check",
]
REPO = Path(__file__).resolve().parents[2]


def _module(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"research.scripts.{name}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_runs_as_a_module_from_the_repository_root(name):
    done = _module(name, "--help", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_regimes_table_regenerates_the_per_run_page():
    jsons = sorted(str(p.relative_to(REPO)) for p in (REPO / "research" / "regimes").glob("*.json"))
    done = _module("regimes", "table", *jsons)
    assert done.returncode == 0, done.stderr
    rows = [line.strip() for line in done.stdout.splitlines() if line.startswith("| fashion-mnist")]
    assert len(rows) == len(jsons)
    page = {line.strip() for line in (REPO / "research" / "per-run.md").read_text().splitlines()}
    assert [r for r in rows if r not in page] == []


def test_bench_plots_redraws_a_committed_bench(tmp_path):
    from PIL import Image

    bench = REPO / "research" / "bench" / "long"
    done = _module("bench_plots", str(bench / "results.json"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "long"
    names = {p.name for p in out.iterdir()}
    linked = {
        line.split("](")[1].rstrip(")")
        for line in (bench / "report.md").read_text().splitlines()
        if line.startswith("![")
    }
    # every plot the results determine; the histograms need the models' arrays
    assert names == {n for n in linked if not n.startswith(("reliability_hist", "latent_hist"))}
    for name in names:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert not list(bench.glob("*.png"))  # the committed folder is left as it was


def test_bench_plots_refuses_a_file_of_another_schema(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": {"name": "something else", "version": 1}}')
    done = _module("bench_plots", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
