"""A risk-controlled artifact served by a real ``bentoml serve``: the model card states the guarantee."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from server_util import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def risk_artifact(tmp_path_factory, digits_run, digits_data):
    from training.export import export_run

    return export_run(
        digits_run,
        tmp_path_factory.mktemp("risk") / "model.onnx",
        data=digits_data,
        target_risk=0.1,
        delta=0.1,
    )


def test_model_card_states_mode_alpha_delta_bound_calibration_size_and_coverage(risk_artifact, digits_data):
    from serving.artifact_format import read_metadata

    md, _ = read_metadata(risk_artifact)
    server = start_server({"BINENC_MODEL_PATH": str(risk_artifact), "BINENC_MODEL_TAG": None})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            card = client.get("/model").json()
            x = digits_data.test.images[:16, 0].astype(np.float32) / 255.0  # N x H x W on /predict
            r = client.post("/predict", json={"instances": x.tolist()})
    finally:
        server.stop()
    a = card["acceptance"]
    assert a == md["acceptance"] and a["mode"] == "risk" and card["target_accept_rate"] is None
    assert (a["alpha"], a["delta"]) == (0.1, 0.1) and a["upper_bound_at_threshold"] <= a["alpha"]
    assert a["calibration_n"] > 0 and 0 < a["calibration_coverage"] <= 1 and "exchangeable" in a["covers"]
    assert card["threshold"] == pytest.approx(a["threshold"])
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["accepted"] for p in preds] == [p["reliability"] >= a["threshold"] for p in preds]
