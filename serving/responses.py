"""The uniform error body on the wire: building it, recognising it, and rewriting foreign ones into it.

Everywhere: ``{"error": {"code": ..., "message": ...}}``; under ``/v2`` the Open Inference Protocol's
flavour ``{"error": "<message>", "code": ...}`` (its ``error`` must be a string).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ApiError, error_body, oip_error_body

Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
ROUTES_HINT = (
    "routes: POST /predict, /predict_image, /predict_batch, GET /model, /livez, /readyz, /metrics, /v2/..."
)
INTERNAL_MESSAGE = "an unexpected error occurred; see the server log"
OVERLOADED_MESSAGE = "the batching queue is full (the server is overloaded); retry after a short wait"
BENTOML_GENERIC = "An unexpected error has occurred"


class QuietRefusals(logging.Filter):
    """Drops log records whose exception is one of ``kinds``: BentoML logs an ERROR with a full traceback for
    every request it refuses on its input (pydantic validation) or for a full batching queue; each is answered
    in the uniform shape and counted in ``binenc_request_errors_total``, and a traceback per request would let
    any client flood the log."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.kinds))


def is_oip(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def body_for(path: str, code: str, message: str) -> dict[str, Any]:
    """The uniform error body for ``path`` (OIP flavour under ``/v2``)."""
    return oip_error_body(code, message) if is_oip(path) else error_body(code, message)


async def send_json(
    send: Send, status: int, body: dict, headers: Headers | None = None, close: bool = False
) -> None:
    payload = json.dumps(body).encode()
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        out.append((b"connection", b"close"))
    out.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def refuse(
    scope: dict, send: Send, err: ApiError, headers: Headers | None = None, close: bool = False
) -> None:
    """Answer ``err`` in the uniform shape (the outer :class:`serving.middleware.UniformErrors` counts it)."""
    await send_json(send, err.status, body_for(scope.get("path", ""), err.code, err.message), headers, close)


def uniform_code(body: bytes, oip: bool) -> str | None:
    """The error ``code`` when ``body`` is already in the uniform shape, else ``None``."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if oip:
        ok = set(obj) == {"error", "code"} and isinstance(err, str) and isinstance(obj["code"], str)
        return obj["code"] if ok else None
    if (
        set(obj) == {"error"}
        and isinstance(err, dict)
        and isinstance(err.get("code"), str)
        and isinstance(err.get("message"), str)
    ):
        return err["code"]
    return None


def _pydantic_code(first: dict) -> str:
    kind = str(first.get("type") or "")
    if kind == "missing":
        return "missing_field"
    if kind == "json_invalid":
        return "invalid_json"
    if kind == "extra_forbidden":
        return "unknown_field"
    if kind.endswith(("_type", "_parsing")):
        return "invalid_type"
    if kind and kind != "value_error":
        return kind  # one of our codes (PydanticCustomError raised by serving.service)
    return "invalid_input"


def rewrite(
    status: int, body: bytes, method: str = "", path: str = "", allow: str | None = None
) -> tuple[str, str]:
    """``(code, message)`` for a foreign error body (plain text, ``{"error": "..."}``, pydantic details)."""
    code = STATUS_CODES.get(status, "error" if status < 500 else "internal_error")
    message = body.decode("utf-8", "replace").strip() or code.replace("_", " ")
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        detail = obj.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "msg" in detail[0]:
            first = detail[0]
            code = _pydantic_code(first)
            loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
            message = (
                f"{loc}: {first['msg']}" if loc and not str(first["msg"]).startswith(loc) else first["msg"]
            )
        elif isinstance(obj.get("error"), str):
            message = obj["error"]
        elif isinstance(detail, str):
            message = detail
    if status == 404 and message in ("Not Found", "not found"):
        message = f"no route {method} {path}; {ROUTES_HINT}"
    elif status == 405 and message == "Method Not Allowed":
        message = f"{method} is not allowed on {path}" + (f"; use {allow}" if allow else "")
    if status == 503 and message.startswith(BENTOML_GENERIC):  # BentoML's answer to a full batching queue
        code, message = "overloaded", OVERLOADED_MESSAGE
    elif status >= 500 and status not in (503, 504):
        message = INTERNAL_MESSAGE
    return code, message
