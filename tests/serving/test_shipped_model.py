"""The shipped reference model (``models/fashion-mnist_bin_enc``): checksum, schema, real images, and the Bento.

A change of the artifact contract (``SCHEMA_VERSION``) fails here until ``make model`` regenerates the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_util import start_server

from serving.artifact import load_artifact
from serving.artifact_format import OUTPUT_NAMES, SCHEMA_VERSION, read_metadata

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "fashion-mnist_bin_enc"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((MODEL_DIR / "provenance.json").read_text())


def test_checksum_and_size_match_provenance(provenance):
    data = (MODEL_DIR / "model.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == provenance["sha256"]
    assert len(data) == provenance["bytes"]


def test_schema_is_current_and_metadata_verifies(provenance):
    md, _ = read_metadata(MODEL_DIR / "model.onnx", verify=True)
    assert md["schema_version"] == SCHEMA_VERSION == provenance["schema_version"]
    assert md["checksum"] == provenance["metadata_checksum"]
    assert md["dataset"] == "fashion-mnist" and md["variant"] == "bin_enc"
    assert md["training_metrics"]["test_acc"] == provenance["training_metrics"]["test_acc"]


def test_provenance_names_the_commands(provenance):
    assert provenance["train_command"].startswith(
        "python -m training --dataset fashion-mnist --variant bin_enc"
    )
    assert f"--seed {provenance['train_config']['seed']} " in provenance["train_command"]
    assert provenance["export_command"].startswith("python scripts/ship_model.py")
    assert "--target-risk" in provenance["export_command"]
    assert provenance["export_code_version"].startswith("git:")


def test_threshold_certifies_the_selective_error(provenance):
    """docs/shipped-model.md: ALPHA among 0.01/0.02/0.03, DELTA 0.05 over six candidates, bound <= ALPHA."""
    from scipy.stats import beta

    md, _ = read_metadata(MODEL_DIR / "model.onnx", verify=True)
    a = md["acceptance"]
    assert a == provenance["acceptance"] and a["mode"] == "risk" and md["target_accept_rate"] is None
    assert a["alpha"] in (0.01, 0.02, 0.03) and a["delta"] == 0.05 and a["candidates"] == 6
    assert md["threshold"] == a["threshold"] and a["calibration_n"] + a["selection_n"] == 6000
    n, k = a["calibration_accepted"], a["calibration_errors_accepted"]
    bound = beta.ppf(1 - a["delta_per_candidate"], k + 1, n - k)  # exact one-sided Clopper-Pearson
    assert a["upper_bound_at_threshold"] == pytest.approx(bound) and bound <= a["alpha"]
    assert (
        md["calibration"]["n"] == a["calibration_n"]
        and md["calibration"]["accept_rate"] == a["calibration_coverage"]
    )


def _pixels(path: Path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    assert img.shape == (28, 28)
    return img[None, None]


def test_real_fashion_mnist_image_is_classified_and_accepted():
    art = load_artifact(MODEL_DIR / "model.onnx", providers="CPUExecutionProvider")
    out = art.run(_pixels(EXAMPLES / "fashion-mnist-ankle-boot.png"))
    assert set(out) == set(OUTPUT_NAMES)
    assert art.classes[int(out["logits"].argmax(1)[0])] == "ankle boot"
    accepted, _ = art.decide(out)
    assert bool(accepted[0])


def test_real_mnist_digit_is_rejected():
    art = load_artifact(MODEL_DIR / "model.onnx", providers="CPUExecutionProvider")
    out = art.run(_pixels(EXAMPLES / "mnist-digit-seven.png"))
    accepted, _ = art.decide(out)
    assert not bool(accepted[0])
    assert float(out["reliability"][0]) < art.threshold


@pytest.mark.slow
def test_bento_holds_serving_code_and_shipped_model_and_serves_it(bentoml_home: Path, tmp_path: Path):
    """``bentoml build`` from the repository root with no model configured: serving code + shipped model only."""
    import bentoml

    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    for var in ("BINENC_MODEL_PATH", "BINENC_MODEL_TAG"):
        env.pop(var, None)
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento = bentoml.bentos.get(tag)
    assert [m for svc in bento.info.services for m in svc.models] == []  # no model-store dependency
    src = Path(bento.path) / "src"
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert {
        "models/fashion-mnist_bin_enc/model.onnx",
        "serving/service.py",
        "serving/artifact.py",
        "serving/artifact_format.py",
        "serving/atomic_write.py",
        "serving/static/ui.html",
    } <= files
    assert {f.split("/")[0] for f in files} <= {"serving", "models", "bentofile.yaml", "README.md"}, sorted(
        files
    )

    server = start_server(
        {"BINENC_MODEL_PATH": None, "BINENC_MODEL_TAG": None}, target=[str(bento.tag)], cwd=tmp_path
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/ui").text.startswith("<!doctype html>")
            card = client.get("/model").json()
            assert card["source"] == "shipped:fashion-mnist_bin_enc"
            assert card["acceptance"]["mode"] == "risk" and card["acceptance"]["alpha"] <= 0.03
            with open(EXAMPLES / "fashion-mnist-ankle-boot.png", "rb") as f:
                r = client.post("/predict_image", files={"image": ("boot.png", f, "image/png")})
            assert r.status_code == 200, r.text
            pred = r.json()["predictions"][0]
            assert pred["class_name"] == "ankle boot" and pred["accepted"] is True
    finally:
        server.stop()
