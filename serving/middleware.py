"""ASGI middleware around the whole BentoML app, one concern each (outermost first, as the service adds them):

* :class:`RequestMetrics`: counts every request and its duration under a fixed set of route templates
  (an unknown path is ``other``), so no client can grow ``/metrics``.
* :class:`UniformErrors`: any error response not in the uniform shape (Starlette's 404/405, BentoML's
  pydantic 400s and 503s) is rewritten into it, keeping the status; an escaping exception becomes a uniform
  500 (never a traceback); every error is counted in ``binenc_request_errors_total``.
* :class:`Authentication`: ``Authorization: Bearer KEY`` checked against sha256 hashes (401 otherwise), before
  anything that answers a route (so its open paths hold for ``/docs.json`` too).
* :class:`ApiDocs`: ``GET``/``HEAD /docs.json`` answers the service's complete OpenAPI document.
* :class:`BodyReader`: reads the whole body before the route runs, under a size cap (413), a deadline (408)
  and a cap on uploads in progress (503), so a stalled upload never holds a slot of work in flight; refuses
  ``Content-Length`` together with chunked framing (400).
* :class:`WorkLimit`: at most ``max_concurrency`` requests past their body (429) and a deadline for the
  answer (504).
* :class:`DirectRoutes`: the service's own exact-path routes (``/predict``, ...) are called straight from
  here, skipping BentoML's router and the mounted app's middleware stack (measured: a third of the
  per-request overhead on a small model).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
from starlette.requests import Request

from . import metrics
from .responses import INTERNAL_MESSAGE, Headers, body_for, is_oip, rewrite, send_json, uniform_code
from .validation import ApiError

log = logging.getLogger("binenc.serving")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
HEALTH_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})
ROUTE_LABELS = frozenset({"predict", "predict_image", "predict_batch", "model"})


EXACT_ROUTES = frozenset({"/", "/predict", "/predict_image", "/predict_batch", "/model", "/docs.json", "/ui", "/v2",
                          "/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})


def route_label(path: str) -> str:
    if is_oip(path):
        return "oip"
    head = path.strip("/").split("/", 1)[0]
    return head if head in ROUTE_LABELS else "other"


def route_template(path: str) -> str:
    """The route a path belongs to, from a fixed set (``/v2/models/{name}/infer``, ...); else ``other``."""
    if path in EXACT_ROUTES:
        return path
    parts = path.split("/")
    if len(parts) < 4 or parts[:3] != ["", "v2", "models"] or not parts[3]:
        return "other"
    template, rest = "/v2/models/{name}", parts[4:]
    if rest[:1] == ["versions"] and len(rest) >= 2 and rest[1]:
        template, rest = template + "/versions/{version}", rest[2:]
    if rest == []:
        return template
    return f"{template}/{rest[0]}" if len(rest) == 1 and rest[0] in ("ready", "infer") else "other"


class RequestMetrics:
    """``binenc_http_requests_total{route, status}`` and ``binenc_http_request_seconds{route}`` with ``route``
    from :func:`route_template` (BentoML's own HTTP metrics label by raw path, so the service turns them off)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(scope.get("path", ""))
        t0 = time.perf_counter()
        status = 500

        async def observed_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            metrics.observe_request(route, status, time.perf_counter() - t0)


async def refuse(scope: dict, send: Callable, err: ApiError, headers: Headers | None = None,
                 close: bool = False) -> None:
    """Answer ``err`` in the uniform shape (the outer :class:`UniformErrors` counts it)."""
    await send_json(send, err.status, body_for(scope.get("path", ""), err.code, err.message), headers, close)


class UniformErrors:
    """Rewrites foreign error bodies into the uniform shape and turns escaping exceptions into a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        pending: dict[str, Any] = {}
        state = {"started": False}

        async def guarded_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if int(message["status"]) >= 400:
                    pending["start"], pending["chunks"] = message, []
                    return
            elif message["type"] == "http.response.body" and "start" in pending:
                pending["chunks"].append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._send_error(scope, send, pending.pop("start"), b"".join(pending.pop("chunks")))
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            log.exception("unhandled error on %s", path)
            if not state["started"] or "start" in pending:
                metrics.observe_error(route_label(path), "internal_error")
                await send_json(send, 500, body_for(path, "internal_error", INTERNAL_MESSAGE))

    @staticmethod
    async def _send_error(scope: dict, send: Callable, start: dict, raw: bytes) -> None:
        path = scope.get("path", "")
        status = int(start["status"])
        headers = start.get("headers", [])
        code = uniform_code(raw, is_oip(path))
        if code is None:
            allow = next((v.decode("latin-1") for k, v in headers if k.lower() == b"allow"), None)
            code, message = rewrite(status, raw, scope.get("method", ""), path, allow)
            raw = json.dumps(body_for(path, code, message)).encode()
            headers = [(k, v) for k, v in headers if k.lower() in (b"retry-after", b"allow", b"connection",
                                                                  b"www-authenticate", b"x-bentoml-request-id")]
            headers.append((b"content-type", b"application/json"))
            if code == "overloaded":
                headers.append((b"retry-after", b"1"))
        metrics.observe_error(route_label(path), code)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": raw, "more_body": False})


class ApiDocs:
    """Serves ``GET``/``HEAD /docs.json`` (BentoML's Swagger page at ``/`` reads it) from ``document()`` (``None``
    while the model is not loaded)."""

    PATH = "/docs.json"

    def __init__(self, app: ASGIApp, document: Callable[[], bytes | None]) -> None:
        self.app = app
        self.document = document
        self._cached: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") != self.PATH or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self._cached is None:
            self._cached = self.document()
            if self._cached is None:
                await refuse(scope, send, ApiError(503, "model_not_loaded", "the model is not loaded yet; the "
                             "document describes its shapes: retry when /readyz answers 200"))
                return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._cached)).encode())]})
        body = self._cached if scope["method"] == "GET" else b""
        await send({"type": "http.response.body", "body": body, "more_body": False})


def hash_key(key: str) -> str:
    """The stored form of an API key: its sha256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authentication:
    """``Authorization: Bearer KEY`` whose sha256 is one of ``key_hashes``; ``open_paths`` need no key."""

    def __init__(self, app: ASGIApp, key_hashes: Iterable[str], open_paths: Iterable[str] = HEALTH_PATHS) -> None:
        self.app = app
        self.key_hashes = tuple(bytes.fromhex(h) for h in key_hashes)
        self.open_paths = frozenset(open_paths)

    def allowed(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, key = header.partition(b" ")
        if scheme.lower() != b"bearer" or not key.strip():
            return False
        digest = hashlib.sha256(key.strip()).digest()
        ok = False
        for stored in self.key_hashes:  # every hash compared in constant time, no early exit
            ok |= hmac.compare_digest(digest, stored)
        return ok

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        said = "missing" if header is None else "not a valid API key"
        await refuse(scope, send, ApiError(401, "unauthorized",
                                           f"Authorization header {said}; send 'Authorization: Bearer <API key>'"),
                     [(b"www-authenticate", b'Bearer realm="binenc"')])


BodyCheck = Callable[[bytes], None]


class BodyReader:
    """Reads each request body in full before the app sees it (then replays it), within three bounds:
    ``max_body`` bytes (413, before reading when ``Content-Length`` says so), ``deadline_s`` seconds for the
    whole body (408) and ``max_uploads`` bodies being received at once (503). ``checks`` maps a path to a
    function run on the POSTed body (raising :class:`ApiError`), in one worker thread for bodies above
    ``THREAD_CHECK_BYTES``; ``json_only`` paths need JSON (415).
    """

    THREAD_CHECK_BYTES = 256 * 1024

    def __init__(self, app: ASGIApp, max_body: int, deadline_s: float, max_uploads: int,
                 checks: dict[str, BodyCheck] | None = None, json_only: Iterable[str] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.deadline_s = deadline_s
        self.max_uploads = max_uploads
        self.checks = checks or {}
        self.json_only = frozenset(json_only)
        self.uploading = 0
        self._limiter: anyio.CapacityLimiter | None = None

    async def _check(self, check: BodyCheck, body: bytes) -> None:
        if len(body) <= self.THREAD_CHECK_BYTES:
            check(body)
            return
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        await anyio.to_thread.run_sync(check, body, limiter=self._limiter)

    def _too_large(self, size: int | None) -> ApiError:
        got = f"{size} bytes" if size is not None else "more than that"
        return ApiError(413, "body_too_large", f"request body exceeds the {self.max_body}-byte cap (got {got}); "
                        "send smaller batches or images (the cap is set by BINENC_MAX_BODY_BYTES)")

    def _announced(self, scope: dict) -> tuple[bool, int | None, str]:
        """(has a body, Content-Length, media type) from the headers; raises on a bad Content-Length."""
        length, chunked, media = None, False, ""
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ApiError(400, "invalid_content_length", "Content-Length is not an integer") from None
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"content-type":
                media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        if length is not None and chunked:
            # Two framings for one body: a proxy in front may read the other one (request smuggling).
            raise ApiError(400, "invalid_framing", "Content-Length and Transfer-Encoding: chunked together; send "
                           "one of them")
        if length is not None and length > self.max_body:
            raise self._too_large(length)
        return chunked or bool(length), length, media

    async def _read(self, receive: Callable) -> bytes | None:
        """The whole body, or ``None`` when the client went away."""
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self.deadline_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise self._too_large(None)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        try:
            has_body, _, media = self._announced(scope)
            if scope.get("method") == "POST" and path in self.json_only and media != "application/json":
                got = repr(media) if media else "no Content-Type"
                raise ApiError(415, "unsupported_media_type", f"expected Content-Type application/json, got {got}")
            if not has_body:
                await self.app(scope, receive, send)
                return
            body = await self._receive_body(receive)
            if body is None:
                return  # the client went away while sending
            check = self.checks.get(path) if scope.get("method") == "POST" else None
            if check is not None:
                await self._check(check, body)
        except ApiError as err:
            await refuse(scope, send, err, close=err.status in (408, 413) or err.code == "invalid_framing")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _receive_body(self, receive: Callable) -> bytes | None:
        if self.uploading >= self.max_uploads:
            raise ApiError(503, "too_many_uploads", f"{self.max_uploads} request bodies are being received "
                           "already; retry after a short wait")
        self.uploading += 1
        try:
            return await self._read(receive)
        except TimeoutError:
            raise ApiError(408, "body_timeout", f"the request body was not received within {self.deadline_s:g} s "
                           "(BINENC_BODY_TIMEOUT_S); send it in one go") from None
        finally:
            self.uploading -= 1


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # blocks until the client disconnects, as a server's receive would

    return replay


class WorkLimit:
    """At most ``max_concurrency`` requests in flight (429 with ``Retry-After``) and ``timeout_s`` to answer
    (504). Runs inside :class:`BodyReader`, so only requests whose body has arrived count."""

    def __init__(self, app: ASGIApp, max_concurrency: int, timeout_s: float,
                 exempt: Iterable[str] = HEALTH_PATHS) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.exempt = frozenset(exempt)
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            await refuse(scope, send, ApiError(429, "too_many_requests", f"more than {self.max_concurrency} "
                         "requests in flight; retry after a short wait"), [(b"retry-after", b"1")])
            return
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = True
            await send(message)

        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, tracked_send)
        except TimeoutError:
            if not started:
                await refuse(scope, send, ApiError(504, "timeout", f"the request did not complete within "
                             f"{self.timeout_s:g} s (BINENC_TIMEOUT_S); the server is overloaded"), close=True)
        finally:
            self.in_flight -= 1


class DirectRoutes:
    """Calls ``routes[(method, path)]`` (a Starlette endpoint: Request → Response) without further routing
    (``HEAD`` takes the ``GET`` endpoint); another method on one of these paths is a 405 naming the allowed ones;
    every other request goes on to the app."""

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], Callable[[Request], Awaitable[Any]]]) -> None:
        self.app = app
        self.routes = routes
        self.allowed: dict[str, list[str]] = {}
        for method, path in routes:
            self.allowed.setdefault(path, []).append(method)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] in self.allowed:
            method, path = scope["method"], scope["path"]
            endpoint = self.routes.get(("GET" if method == "HEAD" else method, path))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
            allow = ", ".join(self.allowed[path])
            await refuse(scope, send, ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}; use "
                                               f"{allow}"), [(b"allow", allow.encode())])
            return
        await self.app(scope, receive, send)
