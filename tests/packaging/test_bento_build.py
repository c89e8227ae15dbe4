"""``bentoml build`` from the repository root packs the serving code and the shipped model, nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bento_holds_serving_code_and_shipped_model_only(bentoml_home: Path):
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("BINENC_MODEL_PATH", None)
    proc = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bentos = sorted((bentoml_home / "bentos" / "binenc").glob("*/src"))
    assert bentos, f"no Bento under {bentoml_home}: {proc.stdout}"
    src = bentos[-1]
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert "models/fashion-mnist_bin_enc/model.onnx" in files
    assert "serving/service.py" in files and "serving/artifact.py" in files
    top = {f.split("/")[0] for f in files}
    assert top <= {"serving", "models", "bentofile.yaml", "README.md"}, sorted(top)
    assert not any(f.endswith(".pt") for f in files)
