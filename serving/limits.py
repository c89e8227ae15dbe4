"""The request limits, two ASGI middlewares of the stack :mod:`serving.middleware` describes (this order):

* :class:`BodyReader`: reads the whole body before the route runs, under a size cap (413), a deadline (408)
  and a cap on uploads in progress (503), so a stalled upload never holds a slot of work in flight; refuses
  ``Content-Length`` together with chunked framing (400).
* :class:`WorkLimit`: at most ``max_concurrency`` requests past their body (429) and a deadline for the
  answer (504).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import anyio

from .errors import ApiError
from .responses import ASGIApp, refuse
from .settings import HEALTH_PATHS

BodyCheck = Callable[[bytes], None]


class BodyReader:
    """Reads each request body in full before the app sees it (then replays it), within three bounds:
    ``max_body`` bytes (413, before reading when ``Content-Length`` says so), ``deadline_s`` seconds for the
    whole body (408) and ``max_uploads`` bodies being received at once (503). ``checks`` maps a path to a
    function run on the POSTed body (raising :class:`ApiError`), in one worker thread for bodies above
    ``THREAD_CHECK_BYTES``; ``json_only`` paths need JSON (415).
    """

    THREAD_CHECK_BYTES = 256 * 1024

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        deadline_s: float,
        max_uploads: int,
        checks: dict[str, BodyCheck] | None = None,
        json_only: Iterable[str] = (),
    ) -> None:
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
        return ApiError(
            413,
            "body_too_large",
            f"request body exceeds the {self.max_body}-byte cap (got {got}); "
            "send smaller batches or images (the cap is set by BINENC_MAX_BODY_BYTES)",
        )

    def _announced(self, scope: dict) -> tuple[bool, int | None, str]:
        """(has a body, Content-Length, media type) from the headers; raises on a bad Content-Length."""
        length, chunked, media = None, False, ""
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ApiError(
                        400, "invalid_content_length", "Content-Length is not an integer"
                    ) from None
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"content-type":
                media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        if length is not None and chunked:
            # Two framings for one body: a proxy in front may read the other one (request smuggling).
            raise ApiError(
                400,
                "invalid_framing",
                "Content-Length and Transfer-Encoding: chunked together; send one of them",
            )
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
                raise ApiError(
                    415, "unsupported_media_type", f"expected Content-Type application/json, got {got}"
                )
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
            raise ApiError(
                503,
                "too_many_uploads",
                f"{self.max_uploads} request bodies are being received already; retry after a short wait",
            )
        self.uploading += 1
        try:
            return await self._read(receive)
        except TimeoutError:
            raise ApiError(
                408,
                "body_timeout",
                f"the request body was not received within {self.deadline_s:g} s "
                "(BINENC_BODY_TIMEOUT_S); send it in one go",
            ) from None
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

    def __init__(
        self, app: ASGIApp, max_concurrency: int, timeout_s: float, exempt: Iterable[str] = HEALTH_PATHS
    ) -> None:
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
            await refuse(
                scope,
                send,
                ApiError(
                    429,
                    "too_many_requests",
                    f"more than {self.max_concurrency} requests in flight; retry after a short wait",
                ),
                [(b"retry-after", b"1")],
            )
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
                await refuse(
                    scope,
                    send,
                    ApiError(
                        504,
                        "timeout",
                        f"the request did not complete within "
                        f"{self.timeout_s:g} s (BINENC_TIMEOUT_S); the server is overloaded",
                    ),
                    close=True,
                )
        finally:
            self.in_flight -= 1
