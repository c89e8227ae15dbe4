"""A classifier trained elsewhere, exported with a post-hoc score (``training.export --model``) and served by a real
``bentoml serve``: a Fashion-MNIST image is accepted, an MNIST digit rejected, over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from server_util import start_server

from serving.artifact_format import read_metadata
from training.data import FASHION_MNIST_DIR

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow  # exports a model and starts a server


@pytest.fixture(scope="module")
def outside_artifact(tmp_path_factory) -> Path:
    """The example's plain CNN (examples/outside: no project code; 230 kB of weights), exported through the CLI."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} (the export fits and calibrates on it)"
        )
    from training import export

    out = tmp_path_factory.mktemp("outside") / "art"
    assert (
        export.main(
            [
                "--model",
                "examples.outside.fashion_cnn:make_model",
                "--weights",
                str(EXAMPLES / "outside" / "fashion_cnn.pt"),
                "--dataset",
                "fashion-mnist",
                "--out",
                str(out),
                "--threads",
                "2",
            ]
        )
        == 0
    )
    return out / "model.onnx"


def test_outside_model_card_names_its_posthoc_score(outside_artifact):
    md, _ = read_metadata(outside_artifact, verify=True)
    assert md["variant"] == "outside" and md["score"]["posthoc"]["score"] == "mahalanobis"
    assert md["score"]["posthoc"]["feature_layer"] == "input of '9'"  # the last nn.Linear
    assert md["calibration"]["accept_rate"] == pytest.approx(0.95, abs=0.01)


def test_served_outside_model_accepts_fashion_and_rejects_a_digit(outside_artifact):
    server = start_server({"BINENC_MODEL_PATH": str(outside_artifact), "BINENC_MODEL_TAG": None})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            card = client.get("/model").json()
            assert card["variant"] == "outside" and card["score"]["posthoc"]["score"] == "mahalanobis"
            preds = {}
            for name in ("fashion-mnist-ankle-boot.png", "mnist-digit-seven.png"):
                with open(EXAMPLES / name, "rb") as f:
                    r = client.post("/predict_image", files={"image": (name, f, "image/png")})
                assert r.status_code == 200, r.text
                preds[name] = r.json()["predictions"][0]
    finally:
        server.stop()
    boot, seven = preds["fashion-mnist-ankle-boot.png"], preds["mnist-digit-seven.png"]
    assert boot["class_name"] == "ankle boot" and boot["accepted"] is True
    assert seven["accepted"] is False
