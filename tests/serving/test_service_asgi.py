"""Depths 1 and 2: the Predictor called directly, and the ASGI app + middleware in-process (no server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from serving.app import create_app
from serving.limits import BodyReader, WorkLimit
from serving.middleware import Authentication, UniformErrors, hash_key
from serving.predictor import Predictor
from serving.validation import Limits


def guarded(
    app,
    max_body: int = 8 << 20,
    max_concurrency: int = 256,
    timeout_s: float = 30.0,
    deadline_s: float = 10.0,
    max_uploads: int = 64,
):
    """The service's middleware stack (without BentoML) around ``app``."""
    inner = WorkLimit(app, max_concurrency=max_concurrency, timeout_s=timeout_s)
    return UniformErrors(BodyReader(inner, max_body=max_body, deadline_s=deadline_s, max_uploads=max_uploads))


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
    app = guarded(create_app(lambda: predictor), max_body=64 * 1024)
    ok = run(_request(app, "POST", "/predict", json={"instances": x[:2, 0].tolist()}))
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    big = run(_request(app, "POST", "/predict", json={"instances": x[:9, 0].tolist()}))
    assert big.status_code == 400 and big.json()["error"]["code"] == "batch_too_large"
    over = run(
        _request(
            app,
            "POST",
            "/predict",
            content=b" " * (64 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
    )
    assert over.status_code == 413 and over.json()["error"]["code"] == "body_too_large"
    oip = run(_request(app, "GET", "/v2/models/other"))
    assert (
        oip.status_code == 404
        and isinstance(oip.json()["error"], str)
        and oip.json()["code"] == "model_not_found"
    )


def test_not_loaded_is_503(predictor):
    app = guarded(create_app(lambda: None))
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

    return Starlette(
        routes=[
            Route("/slow", slow),
            Route("/plain500", plain500),
            Route("/foreign503", foreign503),
            Route("/boom", boom),
        ]
    )


def test_concurrency_cap_answers_429():
    async def scenario():
        gate = asyncio.Event()
        app = guarded(fake_app(gate), max_concurrency=1)
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
    app = guarded(fake_app(), timeout_s=0.2)
    r = run(_request(app, "GET", "/slow"))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_foreign_errors_are_rewritten():
    app = guarded(fake_app())
    r = run(_request(app, "GET", "/plain500"))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "secret" not in r.text
    r = run(_request(app, "GET", "/foreign503"))
    assert r.status_code == 503 and r.json() == {
        "error": {"code": "unavailable", "message": "process is overloaded"}
    }
    r = run(_request(app, "GET", "/boom"))  # an exception escaping a route: uniform 500, nothing leaked
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error" and "secret" not in r.text


async def _stalled_upload(app, sent: bytes, declared: int) -> list[dict]:
    """Call ``app`` with a request whose body stops after ``sent`` of ``declared`` bytes; returns what it sent."""
    out: list[dict] = []
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": sent, "more_body": True}
        await asyncio.sleep(3600)  # the client never sends the rest
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        out.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/slow",
        "headers": [(b"content-length", str(declared).encode()), (b"content-type", b"application/json")],
        "query_string": b"",
        "root_path": "",
    }
    await app(scope, receive, send)
    return out


def test_body_deadline_is_408_and_stalled_uploads_do_not_hold_work_slots():
    async def scenario():
        gate = asyncio.Event()
        gate.set()
        app = guarded(fake_app(gate), max_concurrency=1, deadline_s=0.3)
        stalled = [asyncio.create_task(_stalled_upload(app, b"{", 100)) for _ in range(5)]
        await asyncio.sleep(0.05)
        normal = await _request(
            app, "GET", "/slow"
        )  # the one work slot is free: stalled uploads do not count
        return normal, await asyncio.gather(*stalled)

    normal, stalled = run(scenario())
    assert normal.status_code == 200
    for messages in stalled:
        assert messages[0]["status"] == 408
        assert json.loads(messages[1]["body"])["error"]["code"] == "body_timeout"


def test_upload_cap_is_503():
    async def scenario():
        app = guarded(fake_app(), max_uploads=2, deadline_s=0.5)
        stalled = [asyncio.create_task(_stalled_upload(app, b"{", 100)) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = await _request(
            app, "POST", "/slow", content=b"{}", headers={"content-type": "application/json"}
        )
        await asyncio.gather(*stalled)
        return third

    third = run(scenario())
    assert third.status_code == 503 and third.json()["error"]["code"] == "too_many_uploads"


def test_authentication_in_process():
    app = UniformErrors(Authentication(fake_app(), [hash_key("s3cret")], open_paths=["/plain500"]))
    assert (
        run(_request(app, "GET", "/foreign503", headers={"authorization": "Bearer s3cret"})).status_code
        == 503
    )
    for headers in (
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "s3cret"},
        {"authorization": "Basic s3cret"},
        {"authorization": "Bearer "},
    ):
        r = run(_request(app, "GET", "/foreign503", headers=headers))
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", headers
        assert r.headers["www-authenticate"].startswith("Bearer") and "s3cret" not in r.text
    assert run(_request(app, "GET", "/plain500")).status_code == 500  # an open path needs no key


def test_service_module_never_imports_torch(digits_artifact):
    code = (
        "import sys, serving.service, serving.app, serving.oip, serving.images; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    env = {"BINENC_MODEL_PATH": str(digits_artifact)}
    import os

    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **env}, timeout=120)
