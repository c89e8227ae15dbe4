"""The OpenAPI document covers every route, and schemathesis finds nothing against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import API_KEY

from serving.artifact_format import OUTPUT_NAMES

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_document_lists_every_route(hardened):
    doc = httpx.get(
        hardened.url + "/docs.json", headers={"authorization": f"Bearer {API_KEY}"}, timeout=10
    ).json()
    assert set(doc["paths"]) == {
        "/predict",
        "/predict_image",
        "/predict_batch",
        "/model",
        "/livez",
        "/readyz",
        "/healthz",
        "/metrics",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/infer",
    }
    predict = doc["paths"]["/predict"]["post"]
    unit = predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]["properties"][
        "instances"
    ]
    assert (unit["minItems"], unit["maxItems"]) == (1, 4)  # BINENC_MAX_BATCH=4 on this server
    assert unit["items"]["maxItems"] == 8 and unit["items"]["items"]["items"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
    }
    assert set(doc["paths"]["/predict_image"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data",
        "image/png",
        "image/jpeg",
    }
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert infer["properties"]["outputs"]["items"]["properties"]["name"]["enum"] == list(OUTPUT_NAMES)
    for path in doc["paths"].values():
        for op in path.values():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref in ("#/components/schemas/Error", "#/components/schemas/OipError")
    assert doc["security"] == [{"apiKey": []}] and doc["paths"]["/livez"]["get"]["security"] == []


def test_schemathesis_finds_nothing(hardened, tmp_path):
    """Every operation, every check (including ignored_auth: requests without the key must get 401)."""
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        hardened.url + "/docs.json",
        "--checks",
        "all",
        "--max-examples",
        "12",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "-H",
        f"Authorization: Bearer {API_KEY}",
        "--no-color",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "17/17" in result.stdout  # every operation was tested


@pytest.mark.parametrize(
    "path,body,code",
    [
        ("/predict_batch", {"pixels": []}, "empty_batch"),
        ("/predict_batch", {"pixels": {}}, "invalid_type"),
        ("/predict_batch", {"pixels": [[[[0.0] * 8] * 8]], "extra": True}, "unknown_field"),
        (
            "/predict",
            {"instances": [[[0] * 8] * 8], "pixel_range": "0-255", "threshold": None},
            "invalid_threshold",
        ),
        (
            "/v2/models/binenc/infer",
            {
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}],
                "outputs": None,
            },
            "invalid_type",
        ),
        (
            "/v2/models/binenc/infer",
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [[0.0] * 64]}]},
            "invalid_shape",
        ),
        (
            "/v2/models/binenc/infer",
            {
                "id": 5,
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}],
            },
            "invalid_type",
        ),
        (
            "/v2/models/binenc/infer",
            {
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}],
                "outputs": [{"name": "z", "parameters": {"binary_data": "yes"}}],
            },
            "invalid_type",
        ),
    ],
)
def test_fuzzer_findings_stay_fixed(hardened, path, body, code):
    """Schema-forbidden requests the server once accepted (or schema-allowed ones it refused): now exact."""
    r = httpx.post(hardened.url + path, json=body, headers={"authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert r.status_code == 400, r.text
    got = r.json()["code"] if path.startswith("/v2") else r.json()["error"]["code"]
    assert got == code, r.text
