"""API keys over real HTTP (the ``hardened`` server stores only the key's sha256, in a file)."""

from __future__ import annotations

import httpx
import pytest
from conftest import API_KEY

pytestmark = pytest.mark.slow


def test_missing_or_wrong_key_is_401(hardened, digits_pixels):
    x, _ = digits_pixels
    body = {"instances": x[:1, 0].tolist()}
    with httpx.Client(base_url=hardened.url, timeout=10) as client:
        for headers in (
            {},
            {"authorization": "Bearer wrong-key"},
            {"authorization": API_KEY},
            {"authorization": f"Basic {API_KEY}"},
        ):
            r = client.post("/predict", json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json() == {"error": {"code": "unauthorized", "message": r.json()["error"]["message"]}}
            assert r.headers["www-authenticate"].startswith("Bearer")
        oip = client.get("/v2/models/binenc")
        assert (
            oip.status_code == 401
            and oip.json()["code"] == "unauthorized"
            and isinstance(oip.json()["error"], str)
        )
        assert client.get("/model").status_code == 401
        ok = client.post("/predict", json=body, headers={"authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_health_and_metrics_stay_open(hardened):
    with httpx.Client(base_url=hardened.url, timeout=10) as client:
        for path in ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200, path


def test_keys_never_logged(hardened):
    with httpx.Client(base_url=hardened.url, timeout=10) as client:
        client.get("/model", headers={"authorization": f"Bearer {API_KEY}"})
        client.get("/model", headers={"authorization": "Bearer not-the-key-xyz"})
    log = hardened.log_path.read_text(errors="replace")
    assert API_KEY not in log and "not-the-key-xyz" not in log
