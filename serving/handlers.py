"""What every Starlette route shares: error handling, media types and where the model call runs."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError, error_body, oip_error_body
from .responses import INTERNAL_MESSAGE, STATUS_CODES

log = logging.getLogger("binenc.serving")

Endpoint = Callable[[Request], Awaitable[Response]]


def handle_errors(oip: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Decorator: :class:`ApiError` (and Starlette's HTTPException) → uniform JSON response; else a uniform 500."""
    make = oip_error_body if oip else error_body

    def wrap(fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except HTTPException as exc:
                code = STATUS_CODES.get(exc.status_code, "error")
                return JSONResponse(make(code, str(exc.detail)), status_code=exc.status_code)
            except ApiError as err:
                body = make(err.code, err.message) if oip else err.body()
                return JSONResponse(body, status_code=err.status)
            except Exception:
                log.exception("unhandled error in %s", fn.__name__)
                return JSONResponse(make("internal_error", INTERNAL_MESSAGE), status_code=500)

        endpoint.__name__ = fn.__name__
        return endpoint

    return wrap


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, allowed: tuple[str, ...]) -> str:
    mt = media_type(request)
    if mt not in allowed:
        got = f"'{mt}'" if mt else "no Content-Type"
        raise ApiError(
            415, "unsupported_media_type", f"expected Content-Type {' or '.join(allowed)}, got {got}"
        )
    return mt


class Offload:
    """Runs model calls: batches of up to ``inline_max`` straight on the event loop (a thread hop costs more
    than the call), larger ones and other heavy work in at most ``threads`` worker threads. Image decoding
    runs in its own pool of exactly ``decode_threads`` threads (:meth:`cancellable`)."""

    def __init__(self, inline_max: int, threads: int, decode_threads: int = 1) -> None:
        self.inline_max = inline_max
        self.threads = threads
        self.decode_threads = decode_threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def run(self, n: int, fn: Callable[..., Any], *args: Any) -> Any:
        if n <= self.inline_max:
            return fn(*args)
        return await self.thread(fn, *args)

    async def cancellable(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args, cancelled)`` in the fixed pool. When the awaiting request is given up (timeout, client
        gone) ``cancelled`` is set, so ``fn`` stops at its next check, and a job not started yet never runs:
        abandoned work cannot pile up and the pool never grows past ``decode_threads``."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="binenc-decode")
        cancelled = threading.Event()
        future = self._pool.submit(fn, *args, cancelled)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancelled.set()
            future.cancel()
            raise
