"""The shipped reference model (``models/fashion-mnist_bin_enc``): checksum, schema and one real image.

A change of the artifact contract (``SCHEMA_VERSION``) fails here until ``make model`` regenerates the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.artifact import OUTPUT_NAMES, SCHEMA_VERSION, load_artifact, read_metadata

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
    assert provenance["train_command"].startswith("python -m training --dataset fashion-mnist --variant bin_enc")
    assert provenance["export_command"].startswith("python scripts/ship_model.py")
    assert provenance["export_code_version"].startswith("git:")


def _pixels(path: Path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    assert img.shape == (28, 28)
    return img[None, None]


def test_real_fashion_mnist_image_is_classified_and_accepted():
    art = load_artifact(MODEL_DIR / "model.onnx", providers="cpu")
    out = art.run(_pixels(EXAMPLES / "fashion-mnist-ankle-boot.png"))
    assert set(out) == set(OUTPUT_NAMES)
    assert art.classes[int(out["logits"].argmax(1)[0])] == "ankle boot"
    accepted, _ = art.decide(out)
    assert bool(accepted[0])


def test_real_mnist_digit_is_rejected():
    art = load_artifact(MODEL_DIR / "model.onnx", providers="cpu")
    out = art.run(_pixels(EXAMPLES / "mnist-digit-seven.png"))
    accepted, _ = art.decide(out)
    assert not bool(accepted[0])
    assert float(out["reliability"][0]) < art.threshold
