"""ASGI middleware around the whole BentoML app, one concern each (outermost first, as the service adds them):

* :class:`RequestMetrics`: counts every request and its duration under a fixed set of route templates
  (an unknown path is ``other``), so no client can grow ``/metrics``.
* :class:`UniformErrors`: any error response not in the uniform shape (Starlette's 404/405, BentoML's
  pydantic 400s and 503s) is rewritten into it, keeping the status; an escaping exception becomes a uniform
  500 (never a traceback); every error is counted in ``binenc_request_errors_total``.
* :class:`Authentication`: ``Authorization: Bearer KEY`` checked against sha256 hashes (401 otherwise), before
  anything that answers a route (so its open paths hold for ``/docs.json`` too).
* :class:`ApiDocs`: ``GET``/``HEAD /docs.json`` answers the service's complete OpenAPI document.
* :class:`serving.limits.BodyReader` and :class:`serving.limits.WorkLimit`: the request limits (body size,
  upload deadline and uploads in progress; work in flight and the answer's deadline).
* :class:`DirectRoutes`: the service's own exact-path routes (``/predict``, ...) are called straight from
  here, skipping BentoML's router and the mounted app's middleware stack (measured: a third of the
  per-request overhead on a small model).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request

from . import prometheus
from .errors import ApiError
from .responses import INTERNAL_MESSAGE, ASGIApp, body_for, is_oip, refuse, rewrite, send_json, uniform_code
from .settings import HEALTH_PATHS

log = logging.getLogger("binenc.serving")

ROUTE_LABELS = frozenset({"predict", "predict_image", "predict_batch", "model"})


EXACT_ROUTES = frozenset(
    {"/", "/predict", "/predict_image", "/predict_batch", "/model", "/docs.json", "/ui", "/v2", *HEALTH_PATHS}
)


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
            prometheus.observe_request(route, status, time.perf_counter() - t0)


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
                prometheus.observe_error(route_label(path), "internal_error")
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
            headers = [
                (k, v)
                for k, v in headers
                if k.lower()
                in (b"retry-after", b"allow", b"connection", b"www-authenticate", b"x-bentoml-request-id")
            ]
            headers.append((b"content-type", b"application/json"))
            if code == "overloaded":
                headers.append((b"retry-after", b"1"))
        prometheus.observe_error(route_label(path), code)
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
        if (
            scope["type"] != "http"
            or scope.get("path") != self.PATH
            or scope.get("method") not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        if self._cached is None:
            self._cached = self.document()
            if self._cached is None:
                await refuse(
                    scope,
                    send,
                    ApiError(
                        503,
                        "model_not_loaded",
                        "the model is not loaded yet; the "
                        "document describes its shapes: retry when /readyz answers 200",
                    ),
                )
                return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._cached)).encode()),
                ],
            }
        )
        body = self._cached if scope["method"] == "GET" else b""
        await send({"type": "http.response.body", "body": body, "more_body": False})


def hash_key(key: str) -> str:
    """The stored form of an API key: its sha256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authentication:
    """``Authorization: Bearer KEY`` whose sha256 is one of ``key_hashes``; ``open_paths`` need no key."""

    def __init__(
        self, app: ASGIApp, key_hashes: Iterable[str], open_paths: Iterable[str] = HEALTH_PATHS
    ) -> None:
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
        await refuse(
            scope,
            send,
            ApiError(
                401, "unauthorized", f"Authorization header {said}; send 'Authorization: Bearer <API key>'"
            ),
            [(b"www-authenticate", b'Bearer realm="binenc"')],
        )


class DirectRoutes:
    """Calls ``routes[(method, path)]`` (a Starlette endpoint: Request → Response) without further routing
    (``HEAD`` takes the ``GET`` endpoint); another method on one of these paths is a 405 naming the allowed ones;
    every other request goes on to the app."""

    def __init__(
        self, app: ASGIApp, routes: dict[tuple[str, str], Callable[[Request], Awaitable[Any]]]
    ) -> None:
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
            await refuse(
                scope,
                send,
                ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}; use {allow}"),
                [(b"allow", allow.encode())],
            )
            return
        await self.app(scope, receive, send)
