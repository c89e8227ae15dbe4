"""A model trained on a folder of the user's own PNG files, exported and served by a real ``bentoml serve``: the
folder names are the served class names, and the training files themselves are accepted by ``/predict_image``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_util import start_server

CLASSES = ("red-ish", "green-ish", "blue-ish")


def _write(root: Path, per_class: int = 20) -> None:
    """RGB PNGs at 10x12 whose strongest channel is the class (noise on top): a colour folder the model can learn."""
    rng = np.random.default_rng(1)
    for name in CLASSES:
        k = ("red-ish", "green-ish", "blue-ish").index(name)
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 170, (10, 12, 3), dtype=np.uint8)
            a[..., k] += 70
            Image.fromarray(a, "RGB").save(root / name / f"{i:02d}.png")


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory) -> tuple[Path, Path]:
    from training import cli

    root = tmp_path_factory.mktemp("own") / "colours"
    _write(root)
    out = root.parent / "run"
    code = cli.main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            "--backbone",
            "mlp",
            "--min-steps",
            "400",
            "--out",
            str(out),
            "--quiet",
            "--threads",
            "1",
            "--export",
        ]
    )
    assert code == 0, json.loads((out / "metrics.json").read_text()).get("collapse")
    return root, out / "model.onnx"


def test_served_class_names_are_the_folder_names(folder_model):
    root, model = folder_model
    server = start_server({"BINENC_MODEL_PATH": str(model), "BINENC_MODEL_TAG": None})
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            card = http.get("/model").json()
            assert card["classes"] == sorted(CLASSES)
            assert card["input"]["shape"] == [3, 10, 12]
            files = sorted(root.glob("*/*.png"))[::4]
            upload = [("image", (p.name, p.read_bytes(), "image/png")) for p in files]
            r = http.post("/predict_image", files=upload)
            assert r.status_code == 200, r.text
            names = [p["class_name"] for p in r.json()["predictions"]]
            truth = [p.parent.name for p in files]
            assert set(names) <= set(CLASSES)
            assert np.mean(np.array(names) == np.array(truth)) >= 0.9, list(zip(names, truth, strict=True))
    finally:
        server.stop()
