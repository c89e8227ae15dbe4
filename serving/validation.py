"""Request parsing and validation, and the uniform error body every route answers with.

Every refusal is an :class:`ApiError`: an HTTP status, a stable ``code`` and a message saying what was
expected, what arrived and how to fix it. Framework-free (bytes, decoded JSON, numpy); the request formats
are documented in docs/serving.md and, exactly, in the OpenAPI document (:mod:`serving.openapi`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core

PIXEL_RANGES = ("0-1", "0-255")
BATCH_FIELDS = ("pixels",)
_BOOL_TOKEN = re.compile(rb"\b(?:true|false)\b")
PREDICT_FIELDS = ("instances", "pixel_range", "threshold")

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_JSON_DEPTH = 16


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
    return ApiError(400, code, message, detail)


@dataclass(frozen=True)
class Limits:
    """Server-side caps. ``max_body_bytes`` applies to every route; ``max_batch`` to every predict route."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: channels, height, width (pixels float32 NCHW in [0, 1])."""

    channels: int
    height: int
    width: int

    @property
    def request_shape(self) -> tuple[int, ...]:
        """Per-instance shape expected by ``/predict``: H×W for grayscale, C×H×W for colour."""
        if self.channels == 1:
            return (self.height, self.width)
        return (self.channels, self.height, self.width)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe_request(self) -> str:
        dims = "×".join(str(d) for d in self.request_shape)
        return f"N×{dims}"

    def describe_model(self) -> str:
        return "N×" + "×".join(str(d) for d in self.model_shape)


@dataclass(frozen=True)
class PredictRequest:
    pixels: np.ndarray  # float32 (N, C, H, W) in [0, 1]
    threshold: float | None
    pixel_range: str


# --------------------------------------------------------------------------- JSON
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (non-finite numbers are refused)")


# Byte classes of the nesting scan: +1 opens an array/object, -1 closes one, 0 is anything else.
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[list(b"[{")] = 1
_NESTING[list(b"]}")] = -1
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def _depth_ok(raw: bytes, max_depth: int) -> bool:
    """Nesting check before parsing, so a deeply nested body cannot exhaust the parser. Linear whatever the
    bytes (C and numpy passes, no regex): escaped backslashes and quotes are dropped, only quotes and brackets
    are kept, the quotes open and close strings (a running count's parity), and brackets outside strings are summed."""
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    data = np.frombuffer(text.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    step = _NESTING[data]
    quotes = data == 0x22
    if quotes.any():
        step[(np.cumsum(quotes, dtype=np.int32) & 1).astype(bool)] = 0
    return int(np.cumsum(step, dtype=np.int32).max(initial=0)) <= max_depth


def parse_json(raw: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Decode a UTF-8 JSON body; NaN/Infinity literals, bad UTF-8 and excessive nesting are 400s.

    Uses pydantic-core's parser (a BentoML dependency), ~4× faster than :func:`json.loads` on pixel arrays.
    """
    if not raw or not raw.strip():
        raise bad_request("invalid_json", "request body is empty; expected a JSON object")
    # The byte-level depth scan costs ~1 µs per KiB; only run it when the body could be deep at all.
    if raw.count(b"[") + raw.count(b"{") > max_depth and not _depth_ok(raw, max_depth):
        raise bad_request(
            "invalid_json", f"JSON nesting deeper than {max_depth} levels; expected at most N×C×H×W arrays"
        )
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as err:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uerr:
            raise bad_request("invalid_json", f"request body is not UTF-8: {uerr}") from None
        hint = ""
        for literal in (b"NaN", b"Infinity"):
            if literal in raw:
                hint = f"; {literal.decode()} is not valid JSON (non-finite numbers are refused)"
                break
        raise bad_request("invalid_json", f"request body is not valid JSON: {err}{hint}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "array"
    return type(value).__name__


def _first_non_number(value: Any, path: str = "") -> tuple[str, Any] | None:
    """Locate the first element that is not a JSON number (for a precise error message)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_non_number(item, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return path, value
    return None


def _ragged_location(value: Any, path: str = "") -> str:
    """Describe where nested lists stop being rectangular."""
    if not isinstance(value, list) or not value:
        return path or "top level"
    kinds = {isinstance(v, list) for v in value}
    if len(kinds) > 1:
        return f"{path or 'top level'} mixes arrays and scalars"
    if kinds == {True}:
        lengths = [len(v) for v in value]
        if len(set(lengths)) > 1:
            first = lengths[0]
            bad = next(i for i, n in enumerate(lengths) if n != first)
            return f"{path}[{bad}] has {lengths[bad]} elements but {path}[0] has {first}"
        for i, v in enumerate(value):
            inner = _ragged_location(v, f"{path}[{i}]")
            if "has" in inner or "mixes" in inner:
                return inner
    return path or "top level"


def _has_literal(raw_instances: Any) -> bool:
    """True when a value that numpy would silently coerce (booleans) may hide in the nested lists."""
    return _first_non_number(raw_instances) is not None


def to_array(value: Any, field: str, *, check_literals: bool = True) -> np.ndarray:
    """Nested JSON lists of numbers → numeric ndarray; strings, booleans, nulls, objects and ragged arrays are 400s.

    ``check_literals`` walks the nested lists looking for booleans (numpy turns ``true`` into 1 without
    complaint). Callers that know the raw body holds no ``true``/``false`` token can skip the walk.
    """
    if not isinstance(value, list):
        raise bad_request(
            "invalid_type", f"{field}: expected a nested array of numbers, got {_type_name(value)}"
        )
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(
            "ragged_array",
            f"{field}: nested arrays are not rectangular ({_ragged_location(value, field)}); every instance "
            "must have the same shape",
        ) from None
    if arr.dtype.kind not in "iuf" or (check_literals and _has_literal(value)):
        found = _first_non_number(value, field)
        if found is None:  # object dtype from e.g. huge integers
            raise bad_request("invalid_type", f"{field}: values must be JSON numbers that fit a float64")
        where, bad = found
        raise bad_request(
            "invalid_type",
            f"{where}: expected a number, got {_type_name(bad)} {json.dumps(bad)[:40]}; pixel values must be "
            "JSON numbers",
        )
    return arr


def check_batch_size(n: int, limits: Limits, field: str) -> None:
    if n == 0:
        raise bad_request("empty_batch", f"{field}: the batch is empty; send at least one instance")
    if n > limits.max_batch:
        raise bad_request(
            "batch_too_large",
            f"{field}: batch of {n} instances exceeds the server cap of {limits.max_batch}; split the request",
        )


def check_shape(
    arr: np.ndarray, expected: tuple[int, ...], field: str, described: str, hint: str = ""
) -> None:
    """Exact shape check: rank and every non-batch dimension must match; nothing is reshaped."""
    if arr.ndim != len(expected) + 1 or tuple(arr.shape[1:]) != tuple(expected):
        got = "×".join(str(d) for d in arr.shape) if arr.ndim else "a scalar"
        raise bad_request(
            "invalid_shape",
            f"{field}: expected {described}, got {got}{hint}",
            {"expected": ["N", *expected], "got": list(arr.shape)},
        )


def check_finite(arr: np.ndarray, field: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise bad_request(
            "non_finite", f"{field}{list(idx)}: value {arr[idx]} is not finite; NaN and Inf are refused"
        )


def to_unit_pixels(arr: np.ndarray, pixel_range: str, field: str, range_hint: bool = True) -> np.ndarray:
    """Check values against the declared range and return float32 in [0, 1] (never clips)."""
    check_finite(arr, field)
    if pixel_range == "0-255":
        if arr.dtype.kind == "f":
            frac = arr != np.round(arr)
            if frac.any():
                idx = tuple(int(i) for i in np.argwhere(frac)[0])
                raise bad_request(
                    "invalid_dtype",
                    f'{field}{list(idx)}: value {arr[idx]} is not a whole number; pixel_range "0-255" takes '
                    'integers 0..255 (use pixel_range "0-1" for floats)',
                )
        lo, hi = 0, 255
    else:
        lo, hi = 0, 1
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = (arr < lo) | (arr > hi)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[idx]
        hint = ""
        if range_hint and pixel_range == "0-1" and 1 < value <= 255:
            hint = '; to send 8-bit pixels 0..255 set "pixel_range": "0-255"'
        raise bad_request(
            "out_of_range",
            f"{field}{list(idx)}: value {value:g} is outside the declared pixel_range [{lo}, {hi}]{hint}",
        )
    if pixel_range == "0-255":
        return (arr.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)
    return arr.astype(np.float32, copy=False)


def validate_threshold(value: Any, calibrated: float, field: str = "threshold") -> float | None:
    """A per-request threshold: a finite number with calibrated ≤ value ≤ 1; ``None`` means the calibrated one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request("invalid_threshold", f"{field}: expected a number, got {_type_name(value)}")
    t = float(value)
    if not math.isfinite(t):
        raise bad_request("invalid_threshold", f"{field}: expected a finite number, got {value}")
    # Tiny tolerance: a client echoing the calibrated value from GET /model must not be refused for rounding.
    if t < calibrated - 1e-9 or t > 1.0:
        raise bad_request(
            "invalid_threshold",
            f"{field}: {t:g} is outside [{calibrated:.6g}, 1]; a request may only ask for a stricter threshold "
            "than the calibrated one",
        )
    return max(t, calibrated)


def parse_predict(
    body: Any, spec: InputSpec, limits: Limits, calibrated_threshold: float, raw: bytes | None = None
) -> PredictRequest:
    """Validate a decoded ``POST /predict`` body and return float32 NCHW pixels in [0, 1]."""
    if not isinstance(body, Mapping):
        raise bad_request(
            "invalid_type", f'request body: expected a JSON object with "instances", got {_type_name(body)}'
        )
    unknown = sorted(set(body) - set(PREDICT_FIELDS))
    if unknown:
        raise bad_request(
            "unknown_field",
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(PREDICT_FIELDS)}",
        )
    if "instances" not in body:
        raise bad_request(
            "missing_field",
            f'missing required field "instances" (a batch of {spec.describe_request()} pixel arrays)',
        )
    pixel_range = body.get("pixel_range", "0-1")
    if pixel_range not in PIXEL_RANGES:
        raise bad_request(
            "invalid_pixel_range",
            f"pixel_range: expected one of {', '.join(map(repr, PIXEL_RANGES))}, got {json.dumps(pixel_range)[:40]}",
        )
    if "threshold" in body and body["threshold"] is None:
        raise bad_request(
            "invalid_threshold",
            "threshold: expected a number, got null (leave it out for the calibrated threshold)",
        )
    threshold = validate_threshold(body.get("threshold"), calibrated_threshold)

    instances = body["instances"]
    if not isinstance(instances, list):
        raise bad_request(
            "invalid_type",
            f"instances: expected an array of {spec.describe_request()}, got {_type_name(instances)}",
        )
    check_batch_size(len(instances), limits, "instances")
    # Booleans are the only non-number values numpy coerces silently; a body without "true"/"false" has none.
    check_literals = raw is None or b"true" in raw or b"false" in raw
    arr = to_array(instances, "instances", check_literals=check_literals)
    hint = ""
    if (
        spec.channels == 1
        and arr.ndim == 4
        and arr.shape[1] == 1
        and tuple(arr.shape[2:]) == spec.request_shape
    ):
        hint = "; grayscale models take N×H×W on /predict (no channel axis); N×1×H×W goes to /predict_batch or OIP"
    elif spec.channels > 1 and arr.ndim == 4 and arr.shape[-1] == spec.channels:
        hint = "; channels-last (N×H×W×C) is not accepted, send channels first"
    check_shape(arr, spec.request_shape, "instances", spec.describe_request(), hint)
    pixels = to_unit_pixels(arr, pixel_range, "instances")
    if spec.channels == 1:
        pixels = pixels[:, None, :, :]
    return PredictRequest(np.ascontiguousarray(pixels, dtype=np.float32), threshold, pixel_range)


def validate_model_tensor(
    arr: np.ndarray, spec: InputSpec, limits: Limits, field: str = "pixels"
) -> np.ndarray:
    """The model contract (batch route, OIP): float32 N×C×H×W, finite, in [0, 1]; returns it contiguous."""
    if arr.dtype.kind not in "iuf":
        raise bad_request("invalid_type", f"{field}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise bad_request("invalid_shape", f"{field}: expected {spec.describe_model()}, got a scalar")
    check_batch_size(int(arr.shape[0]), limits, field)
    check_shape(arr, spec.model_shape, field, spec.describe_model())
    return np.ascontiguousarray(to_unit_pixels(arr, "0-1", field, range_hint=False), dtype=np.float32)


def check_batch_body(raw: bytes, limits: Limits) -> None:
    """The raw ``/predict_batch`` body: a JSON object with only ``pixels``, and no JSON booleans anywhere
    (numpy would turn them into 1.0/0.0); the values themselves are validated per request afterwards."""
    body = parse_json(raw, limits.max_json_depth)
    if not isinstance(body, Mapping):
        raise bad_request("invalid_type", f'expected a JSON object with "pixels", got {_type_name(body)}')
    if "pixels" not in body:
        raise bad_request(
            "missing_field", 'missing required field "pixels" (a batch of N×C×H×W pixel arrays)'
        )
    unknown = sorted(set(body) - set(BATCH_FIELDS))
    if unknown:
        raise bad_request(
            "unknown_field", f'unknown field(s) {", ".join(map(repr, unknown))}; the body holds only "pixels"'
        )
    if (b"true" in raw or b"false" in raw) and _BOOL_TOKEN.search(raw):
        raise bad_request(
            "invalid_type",
            "pixels: expected numbers, got a JSON boolean (true/false); pixel values must be JSON numbers",
        )
