"""The refusal every route answers with: :class:`ApiError` (HTTP status, stable ``code``, a message saying what was
expected, what arrived and how to fix it) and the uniform error bodies."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refusal with an HTTP status, a stable ``code`` and a human message naming the problem."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.detail)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The uniform error body: ``{"error": {"code": ..., "message": ...}}`` (plus ``detail`` when given)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        err["detail"] = detail
    return {"error": err}


def oip_error_body(code: str, message: str) -> dict[str, Any]:
    """The Open Inference Protocol's error body (``error`` must be a string there) plus our ``code``."""
    return {"error": message, "code": code}


def bad_request(code: str, message: str, detail: Any = None) -> ApiError:
    """A 400 refusal."""
    return ApiError(400, code, message, detail)
