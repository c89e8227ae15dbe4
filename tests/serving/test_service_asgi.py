"""Depths 1 and 2: the Predictor called directly, and the ASGI app + guard middleware in-process (no server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from serving.app import GuardMiddleware, create_app
from serving.predictor import Predictor
from serving.validation import Limits


@pytest.fixture(scope="module")
def predictor(digits_artifact) -> Predictor:
    return Predictor.from_path(digits_artifact, Limits(max_body_bytes=64 * 1024, max_batch=8))


def test_predictor_direct(predictor, digits_pixels):
    x, labels = digits_pixels
    preds = predictor.predict(x[:8])
    assert len(preds) == 8 and all(0.0 <= p["reliability"] <= 1.0 for p in preds)
    assert np.mean([p["label"] for p in preds] == labels[:8]) >= 0.75
    strict = predictor.predict(x[:8], threshold=1.0)
    assert not any(p["accepted"] for p in strict)
    card = predictor.model_card()
    assert card["classes"] == [str(i) for i in range(10)] and card["limits"]["max_batch"] == 8


def run(coro):
    return asyncio.run(coro)


async def _request(app, method: str, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, **kwargs)


def test_asgi_app_in_process(predictor, digits_pixels):
    x, _ = digits_pixels
    app = GuardMiddleware(create_app(lambda: predictor), max_body_bytes=64 * 1024)
    ok = run(_request(app, "POST", "/predict", json={"instances": x[:2, 0].tolist()}))
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    big = run(_request(app, "POST", "/predict", json={"instances": x[:9, 0].tolist()}))
    assert big.status_code == 400 and big.json()["error"]["code"] == "batch_too_large"
    over = run(_request(app, "POST", "/predict", content=b" " * (64 * 1024 + 1),
                        headers={"content-type": "application/json"}))
    assert over.status_code == 413 and over.json()["error"]["code"] == "body_too_large"
    oip = run(_request(app, "GET", "/v2/models/other"))
    assert oip.status_code == 404 and isinstance(oip.json()["error"], str) and oip.json()["code"] == "model_not_found"


def test_not_loaded_is_503(predictor):
    app = GuardMiddleware(create_app(lambda: None))
    r = run(_request(app, "GET", "/model"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"


# --------------------------------------------------------------------------- guard middleware on a fake app
def fake_app(gate: asyncio.Event | None = None) -> Starlette:
    async def slow(request):
        if gate is not None:
            await gate.wait()
        else:
            await asyncio.sleep(5)
        return JSONResponse({"ok": True})

    async def plain500(request):
        return PlainTextResponse("secret internal detail", status_code=500)

    async def foreign503(request):
        return JSONResponse({"error": "process is overloaded"}, status_code=503)

    async def boom(request):
        raise RuntimeError("secret")

    return Starlette(routes=[Route("/slow", slow), Route("/plain500", plain500), Route("/foreign503", foreign503),
                             Route("/boom", boom)])


def test_concurrency_cap_answers_429():
    async def scenario():
        gate = asyncio.Event()
        app = GuardMiddleware(fake_app(gate), max_concurrency=1)
        first = asyncio.create_task(_request(app, "GET", "/slow"))
        await asyncio.sleep(0.05)
        second = await _request(app, "GET", "/slow")
        health = await _request(app, "GET", "/livez")  # exempt from the cap (404 here: no such route)
        gate.set()
        return await first, second, health

    first, second, health = run(scenario())
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_requests"
    assert second.headers["retry-after"] == "1"
    assert health.status_code == 404


def test_timeout_answers_uniform_504():
    app = GuardMiddleware(fake_app(), timeout_s=0.2)
    r = run(_request(app, "GET", "/slow"))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_foreign_errors_are_rewritten():
    app = GuardMiddleware(fake_app())
    r = run(_request(app, "GET", "/plain500"))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "secret" not in r.text
    r = run(_request(app, "GET", "/foreign503"))
    assert r.status_code == 503 and r.json() == {"error": {"code": "unavailable", "message": "process is overloaded"}}
    r = run(_request(app, "GET", "/boom"))  # an exception escaping a route: uniform 500, nothing leaked
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error" and "secret" not in r.text


def test_service_module_never_imports_torch(digits_artifact):
    code = ("import sys, serving.service, serving.app, serving.oip, serving.images; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    env = {"BINENC_MODEL_PATH": str(digits_artifact)}
    import os

    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **env}, timeout=120)
