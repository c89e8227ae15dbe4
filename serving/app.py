"""The HTTP surface: a small Starlette app (mounted into the BentoML service) and the guard middleware.

Routes (all errors use the uniform body ``{"error": {"code": ..., "message": ...}}``):

* ``POST /predict``        JSON batch, low latency (no batching queue; small batches run on the event loop)
* ``POST /predict_image``  PNG/JPEG upload(s), converted by :mod:`serving.images`
* ``GET  /model``          model card (signed metadata + annex + request formats + limits)
* ``/v2/...``              Open Inference Protocol v2 (see :mod:`serving.oip`)

``POST /predict_batch`` (adaptive batching) is a BentoML API method on the service class itself.

:class:`GuardMiddleware` wraps the whole BentoML app (every route, including BentoML's own):

* a body larger than ``max_body_bytes`` is refused with 413 *before* it is read when ``Content-Length`` says
  so, and while streaming otherwise (the byte count is checked chunk by chunk; reading stops at the cap);
* more than ``max_concurrency`` requests in flight → 429 with ``Retry-After`` (health and metrics exempt);
* any error response that is not already in the uniform shape (Starlette's 404/405, BentoML's validation
  400s and 503s) is rewritten into it, keeping the status code;
* an exception that escapes a route becomes a uniform 500 (never a traceback).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import metrics
from .images import decode_image
from .validation import (
    ApiError,
    Limits,
    error_body,
    oip_error_body,
    parse_json,
    parse_predict,
    validate_threshold,
)

log = logging.getLogger("binenc.serving")

PredictorGetter = Callable[[], Any]
_BOOL_TOKEN = re.compile(rb"\b(?:true|false)\b")
EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "request_timeout", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
    422: "invalid_input", 429: "too_many_requests", 500: "internal_error", 503: "unavailable",
    504: "timeout",
}
# Batches up to this size run directly on the event loop (a thread hop costs more than the model call);
# larger ones go to a worker thread, one at a time, so the loop keeps accepting requests.
INLINE_MAX = int(os.environ.get("BINENC_INLINE_MAX", "8"))
_THREAD_LIMITER: anyio.CapacityLimiter | None = None


def _limiter() -> anyio.CapacityLimiter:
    global _THREAD_LIMITER
    if _THREAD_LIMITER is None:
        _THREAD_LIMITER = anyio.CapacityLimiter(int(os.environ.get("BINENC_INFER_THREADS", "1")))
    return _THREAD_LIMITER


async def run_blocking(n: int, fn: Callable[..., Any], *args: Any) -> Any:
    if n <= INLINE_MAX:
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args, limiter=_limiter())


# --------------------------------------------------------------------------- guard middleware
class _State:
    __slots__ = ("received", "over_limit", "started")

    def __init__(self) -> None:
        self.received = 0
        self.over_limit = False
        self.started = False


def is_oip(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def body_for(path: str, code: str, message: str) -> dict[str, Any]:
    """Uniform error body, in the OIP flavour (``error`` is a string) under ``/v2``."""
    return oip_error_body(code, message) if is_oip(path) else error_body(code, message)


def _uniform(body: bytes, oip: bool) -> bool:
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    err = obj.get("error")
    if oip:
        return isinstance(err, str) and isinstance(obj.get("code"), str)
    return isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)


def _rewrite(status: int, body: bytes, method: str = "", path: str = "",
             allow: str | None = None) -> tuple[str, str]:
    """Turn a foreign error body (plain text, ``{"error": "..."}``, BentoML/pydantic details) into the uniform one."""
    code = STATUS_CODES.get(status, "error" if status < 500 else "internal_error")
    message = body.decode("utf-8", "replace").strip() or code.replace("_", " ")
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        detail = obj.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "msg" in detail[0]:
            # pydantic validation errors from BentoML API methods; our validators raise PydanticCustomError
            # whose ``type`` is the ApiError code.
            first = detail[0]
            kind = str(first.get("type") or "")
            if kind == "missing":
                code = "missing_field"
            elif kind == "json_invalid":
                code = "invalid_json"
            elif kind.endswith(("_type", "_parsing")):
                code = "invalid_type"
            elif kind and kind != "value_error":
                code = kind  # one of our codes (PydanticCustomError raised by serving.service)
            else:
                code = "invalid_input"
            loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
            message = f"{loc}: {first['msg']}" if loc and not str(first["msg"]).startswith(loc) else first["msg"]
        elif isinstance(obj.get("error"), str):
            message = obj["error"]
        elif isinstance(detail, str):
            message = detail
    if status == 404 and message in ("Not Found", "not found"):
        message = (f"no route {method} {path}; routes: POST /predict, /predict_image, /predict_batch, GET /model, "
                   "/livez, /readyz, /metrics, /v2/...")
    elif status == 405 and message == "Method Not Allowed":
        message = f"{method} is not allowed on {path}" + (f"; use {allow}" if allow else "")
    if status >= 500 and status not in (503, 504):
        message = "an unexpected error occurred; see the server log"
    return code, message


class GuardMiddleware:
    """Body-size cap, concurrency cap and uniform error bodies for the whole app (see module docstring)."""

    # POST routes whose body must be JSON; BentoML's own API routes would otherwise accept any content type.
    JSON_ONLY = frozenset({"/predict_batch"})

    def __init__(self, app: Any, max_body_bytes: int | None = None, max_concurrency: int | None = None,
                 timeout_s: float | None = None) -> None:
        self.app = app
        limits = Limits.from_env()
        self.max_body = int(max_body_bytes or limits.max_body_bytes)
        self.max_concurrency = int(max_concurrency or os.environ.get("BINENC_MAX_CONCURRENCY", "256"))
        self.timeout = float(timeout_s or os.environ.get("BINENC_TIMEOUT_S", "30"))
        self.in_flight = 0

    @staticmethod
    async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: dict,
                         extra_headers: list[tuple[bytes, bytes]] | None = None, close: bool = False) -> None:
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        headers.extend(extra_headers or [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def _too_large_message(self, size: int | None = None) -> str:
        got = f"{size} bytes" if size is not None else "more than that"
        return (f"request body exceeds the {self.max_body}-byte cap (got {got}); send smaller batches or images "
                "(the cap is set by BINENC_MAX_BODY_BYTES)")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        route = _route_label(path)

        async def refuse(status: int, code: str, message: str,
                         extra: list[tuple[bytes, bytes]] | None = None, close: bool = False) -> None:
            metrics.observe_error(route, code)
            await self._send_json(send, status, body_for(path, code, message), extra, close)

        length = None
        content_type = b""
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await refuse(400, "invalid_content_length", "Content-Length is not an integer", close=True)
                    return
            elif key == b"content-type":
                content_type = value
        if length is not None and length > self.max_body:
            # Answer without reading the body; closing the connection stops the client from sending the rest.
            await refuse(413, "body_too_large", self._too_large_message(length), close=True)
            return
        if path in self.JSON_ONLY and scope.get("method") == "POST":
            mt = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            if mt != "application/json":
                await refuse(415, "unsupported_media_type",
                             f"expected Content-Type application/json, got {mt!r}" if mt else
                             "expected Content-Type application/json, got no Content-Type")
                return
        if self.in_flight >= self.max_concurrency:
            await refuse(429, "too_many_requests",
                         f"more than {self.max_concurrency} requests in flight; retry after a short wait",
                         [(b"retry-after", b"1")])
            return

        state = _State()
        max_body = self.max_body
        oip = is_oip(path)
        pending: dict[str, Any] = {}
        source = {"receive": receive}

        async def guarded_receive() -> dict:
            if state.over_limit:
                raise ApiError(413, "body_too_large", self._too_large_message())
            message = await source["receive"]()
            if message["type"] == "http.request":
                state.received += len(message.get("body", b""))
                if state.received > max_body:
                    state.over_limit = True
                    raise ApiError(413, "body_too_large", self._too_large_message())
            return message

        async def prebuffer() -> bool:
            """BentoML validates /predict_batch itself; read its body here (bounded) to refuse what numpy would
            silently coerce (JSON booleans become 1.0/0.0), then replay the bytes to the route."""
            chunks: list[bytes] = []
            while True:
                message = await guarded_receive()
                if message["type"] != "http.request":
                    return False
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            if (b"true" in body or b"false" in body) and _BOOL_TOKEN.search(body):
                raise ApiError(400, "invalid_type", "pixels: expected numbers, got a JSON boolean (true/false); "
                               "pixel values must be JSON numbers")
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # blocks until the client disconnects, as a server's receive would

            source["receive"] = replay
            state.received = 0
            return True

        async def guarded_send(message: dict) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state.started = True
                if int(message["status"]) >= 400 or state.over_limit:
                    pending["start"] = message
                    pending["chunks"] = []
                    return
                await send(message)
            elif kind == "http.response.body" and "start" in pending:
                pending["chunks"].append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start = pending.pop("start")
                raw = b"".join(pending.pop("chunks"))
                status = int(start["status"])
                if state.over_limit and status != 413:
                    # A route (e.g. BentoML's) turned our 413 into a 500 of its own: restore it.
                    await refuse(413, "body_too_large", self._too_large_message(), close=True)
                    return
                if _uniform(raw, oip):
                    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(raw)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": raw, "more_body": False})
                    return
                allow = next((v.decode("latin-1") for k, v in start.get("headers", []) if k.lower() == b"allow"),
                             None)
                code, text = _rewrite(status, raw, scope.get("method", ""), path, allow)
                extra = [(k, v) for k, v in start.get("headers", [])
                         if k.lower() in (b"retry-after", b"allow", b"x-bentoml-request-id")]
                await refuse(status, code, text, extra)
            else:
                await send(message)

        def unanswered() -> bool:
            return not state.started or "start" in pending

        self.in_flight += 1
        try:
            with anyio.move_on_after(self.timeout) as deadline:
                if path in self.JSON_ONLY and scope.get("method") == "POST" and not await prebuffer():
                    return  # the client went away while sending
                await self.app(scope, guarded_receive, guarded_send)
            if deadline.cancelled_caught and unanswered():
                await refuse(504, "timeout", f"the request did not complete within {self.timeout:g} s "
                             "(BINENC_TIMEOUT_S); a slow upload or an overloaded server", close=True)
        except ApiError as err:
            if unanswered():
                await refuse(err.status, err.code, err.message, close=err.status == 413)
        except Exception:
            log.exception("unhandled error on %s", path)
            if unanswered():
                await refuse(500, "internal_error", "an unexpected error occurred; see the server log")
        finally:
            self.in_flight -= 1


def _route_label(path: str) -> str:
    if path.startswith("/v2"):
        return "oip"
    head = path.strip("/").split("/", 1)[0]
    return head if head in ("predict", "predict_image", "predict_batch", "model") else "other"


# --------------------------------------------------------------------------- route helpers
def handle_errors(route: str, oip: bool = False):
    """Decorator: ApiError → uniform JSON response (and a metric); anything else → uniform 500."""
    make = oip_error_body if oip else error_body

    def wrap(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except HTTPException as exc:  # raised by Starlette helpers; keep its status, uniform body
                err = ApiError(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), str(exc.detail))
                metrics.observe_error(route, err.code)
                body = oip_error_body(err.code, err.message) if oip else err.body()
                return JSONResponse(body, status_code=err.status)
            except ApiError as err:
                metrics.observe_error(route, err.code)
                headers = {"connection": "close"} if err.status == 413 else None
                body = oip_error_body(err.code, err.message) if oip else err.body()
                return JSONResponse(body, status_code=err.status, headers=headers)
            except Exception:
                log.exception("unhandled error in %s", route)
                metrics.observe_error(route, "internal_error")
                return JSONResponse(make("internal_error", "an unexpected error occurred; see the server log"),
                                    status_code=500)

        endpoint.__name__ = fn.__name__
        return endpoint

    return wrap


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, allowed: tuple[str, ...]) -> str:
    mt = media_type(request)
    if mt not in allowed:
        got = f"'{mt}'" if mt else "no Content-Type"
        raise ApiError(415, "unsupported_media_type",
                       f"expected Content-Type {' or '.join(allowed)}, got {got}")
    return mt


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, stopping as soon as it passes ``limit`` bytes (the middleware also enforces it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large",
                           f"request body exceeds the {limit}-byte cap; send smaller batches or images")
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse_url_or_type(request: Request, limit: int) -> None:
    """A JSON/form/text body on /predict_image: name the URL case explicitly, else a 415."""
    head = bytearray()
    async for chunk in request.stream():  # look at the first 64 KiB only; the rest is never read
        head += chunk
        if len(head) >= min(limit, 64 * 1024):
            break
    text = bytes(head).decode("utf-8", "replace")
    if any(s in text.lower() for s in ("http://", "https://", "http%3a", "https%3a", "ftp://", "file://")):
        raise ApiError(400, "url_not_supported",
                       "the request carries a URL, not an image; the server never fetches URLs: download the image "
                       "and upload its bytes as multipart/form-data field 'image'")
    require_media_type(request, ("multipart/form-data", "image/png", "image/jpeg"))


def _looks_like_url(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith(("http://", "https://", "ftp://", "file://", "s3://", "gs://", "data:", "www."))


def _parse_form_threshold(value: Any, calibrated: float) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_threshold", "threshold: expected a text field holding a number")
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, "invalid_threshold", f"threshold: expected a number, got {value[:40]!r}") from None
    return validate_threshold(number, calibrated)


# --------------------------------------------------------------------------- app
def create_app(get_predictor: PredictorGetter) -> Starlette:
    """The Starlette app with /predict, /predict_image, /model and the OIP v2 routes."""
    from .oip import oip_routes

    def predictor():
        p = get_predictor()
        if p is None:
            raise ApiError(503, "model_not_loaded", "the model is not loaded yet; retry when /readyz answers 200")
        return p

    def envelope(p: Any, preds: list[dict], threshold: float | None) -> dict[str, Any]:
        return {
            "model": {"name": p.model_name, "version": p.version},
            "threshold": p.threshold if threshold is None else threshold,
            "predictions": preds,
        }

    @handle_errors("predict")
    async def predict(request: Request) -> Response:
        p = predictor()
        require_media_type(request, ("application/json",))
        raw = await read_body(request, p.limits.max_body_bytes)
        if len(raw) > 256 * 1024:  # large bodies are parsed off the event loop
            req = await anyio.to_thread.run_sync(_parse_predict, raw, p, limiter=_limiter())
        else:
            req = _parse_predict(raw, p)
        preds = await run_blocking(len(req.pixels), p.predict, req.pixels, req.threshold, "predict")
        return JSONResponse(envelope(p, preds, req.threshold))

    @handle_errors("predict_image")
    async def predict_image(request: Request) -> Response:
        p = predictor()
        mt = media_type(request)
        if mt in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
            await _refuse_url_or_type(request, p.limits.max_body_bytes)
        mt = require_media_type(request, ("multipart/form-data", "image/png", "image/jpeg"))
        threshold = None
        if mt == "multipart/form-data":
            files, threshold = await _read_multipart(request, p)
        else:
            files = [await read_body(request, p.limits.max_body_bytes)]
        t0 = time.perf_counter()
        if len(files) > 1 or sum(len(f) for f in files) > 64 * 1024:
            arrays = await anyio.to_thread.run_sync(_decode_all, files, p.policy, limiter=_limiter())
        else:
            arrays = _decode_all(files, p.policy)
        pixels = np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
        preds = await run_blocking(len(pixels), p.predict, pixels, threshold, "predict_image")
        out = envelope(p, preds, threshold)
        out["decode_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        return JSONResponse(out)

    @handle_errors("model")
    async def model_card(request: Request) -> Response:
        return JSONResponse(predictor().model_card())

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_image", predict_image, methods=["POST"]),
        Route("/model", model_card, methods=["GET"]),
        *oip_routes(predictor),
    ]
    return Starlette(routes=routes)


def _parse_predict(raw: bytes, p: Any):
    body = parse_json(raw, p.limits.max_json_depth)
    return parse_predict(body, p.spec, p.limits, p.threshold, raw=raw)


def _decode_all(files: list[bytes], policy: Any) -> list[np.ndarray]:
    out = []
    for i, data in enumerate(files):
        try:
            out.append(decode_image(data, policy))
        except ApiError as err:
            if len(files) > 1:
                err.message = f"image[{i}]: {err.message}"
            raise
    return out


async def _read_multipart(request: Request, p: Any) -> tuple[list[bytes], float | None]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    limits = p.limits
    try:
        form = await request.form(max_files=limits.max_batch, max_fields=8, max_part_size=64 * 1024)
    except (MultiPartException, HTTPException) as err:  # Starlette wraps parser errors in HTTPException(400)
        text = getattr(err, "detail", None) or getattr(err, "message", None) or str(err)
        raise ApiError(400, "invalid_multipart", f"could not parse the multipart body: {text}") from None
    try:
        allowed = {"image", "threshold"}
        unknown = sorted(set(form.keys()) - allowed)
        if unknown:
            raise ApiError(400, "unknown_field",
                           f"unknown form field(s) {', '.join(map(repr, unknown))}; send the file(s) as 'image' and "
                           "an optional 'threshold'")
        items = form.getlist("image")
        if not items:
            raise ApiError(400, "missing_field", "missing form field 'image' (a PNG or JPEG file upload)")
        if len(items) > limits.max_batch:
            raise ApiError(400, "batch_too_large", f"{len(items)} images exceed the server cap of {limits.max_batch}")
        files: list[bytes] = []
        for item in items:
            if isinstance(item, UploadFile):
                files.append(await item.read())
            elif _looks_like_url(item):
                raise ApiError(400, "url_not_supported",
                               f"field 'image' holds a URL ({item[:60]!r}), not a file; the server never fetches "
                               "URLs: download the image and upload its bytes")
            else:
                raise ApiError(400, "expected_file",
                               "field 'image' holds text, not a file; upload the PNG/JPEG bytes as a file part "
                               "(filename set)")
        thresholds = form.getlist("threshold")
        if len(thresholds) > 1:
            raise ApiError(400, "invalid_threshold", "threshold given more than once")
        threshold = _parse_form_threshold(thresholds[0] if thresholds else None, p.threshold)
        return files, threshold
    finally:
        await form.close()
