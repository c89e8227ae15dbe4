"""The model-store path: export with ``register=True``, serve by tag, ``bentoml build``, serve the built Bento.

Everything happens in the session's temporary ``BENTOML_HOME``. ``bentoml containerize`` needs Docker, which
the test machines do not have, so it is not exercised here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from server_util import REPO_ROOT, start_server

pytestmark = pytest.mark.slow


def _predict_ok(url: str, x) -> dict:
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/predict", json={"instances": x[:2, 0].tolist()})
        assert r.status_code == 200, r.text
        return client.get("/model").json()


def test_registered_model_serves_by_tag_and_as_a_built_bento(
    digits_run, digits_data, digits_pixels, bentoml_home, tmp_path
):
    import bentoml

    from training.export import export_run

    export_run(digits_run, out=tmp_path / "model.onnx", register=True, data=digits_data)
    stored = bentoml.models.get("binenc:latest")
    assert (stored.path_of("model.onnx")).endswith("model.onnx")
    x, _ = digits_pixels

    server = start_server({"BINENC_MODEL_PATH": None, "BINENC_MODEL_TAG": "binenc:latest"})
    try:
        card = _predict_ok(server.url, x)
        assert card["source"] == f"bentoml:{stored.tag}"
    finally:
        server.stop()

    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BINENC_MODEL_TAG": "binenc:latest"}
    env.pop("BINENC_MODEL_PATH", None)
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    bento = bentoml.bentos.get("binenc:latest")
    assert [str(m.tag) for svc in bento.info.services for m in svc.models] == [str(stored.tag)]
    src = Path(bento.path) / "src"
    packed = {p.relative_to(src).as_posix() for p in src.rglob("*.py")}
    assert {"serving/service.py", "serving/artifact.py", "serving/app.py"} <= packed
    assert not any(p.startswith(("tests/", "training/")) for p in packed)
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "torch" not in requirements and "onnxruntime==" in requirements

    # the built Bento serves, from a directory without the source tree
    server = start_server(
        {"BINENC_MODEL_PATH": None, "BINENC_MODEL_TAG": "binenc:latest"},
        target=[str(bento.tag)],
        cwd=tmp_path,
    )
    try:
        card = _predict_ok(server.url, x)
        assert card["source"] == f"bentoml:{stored.tag}"
    finally:
        server.stop()
