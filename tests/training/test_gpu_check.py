"""The GPU check script runs end to end on any machine; without a GPU it says which parts it skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_and_reports_what_it_skipped(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_check.py"),
            "--out",
            str(tmp_path),
            "--dataset",
            "digits",
            "--seconds",
            "0.05",
            "--no-ort-swap",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["training"]["returncode"] == 0 and len(report["training"]["epoch_time_s"]) == 30
    cells = report["latency"]["ms_per_image"]
    assert set(cells) == {"1", "256"} and all(v > 0 for cell in cells.values() for v in cell.values())
    provider = report["latency"]["provider_reported_by_loader"]
    if torch.cuda.is_available():
        assert "torch_cuda" in cells["1"]
    else:
        assert provider == "CPUExecutionProvider" and "2-GPU torchrun" in report["skipped"]
        assert set(cells["1"]) == {"ort_cpu", "torch_cpu"}
        assert "skipping" in done.stdout
