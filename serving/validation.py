"""Request validation: the server's caps, the model's input, the ``/predict`` body, the model tensor of the batch
route and OIP, and the raw ``/predict_batch`` body.

Every refusal is an :class:`~serving.errors.ApiError`; JSON decoding and nested lists → arrays are
:mod:`serving.json_body`. Framework-free (bytes, decoded JSON, numpy); the request formats are documented in
docs/serving.md and, exactly, in the OpenAPI document (:mod:`serving.openapi`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import bad_request
from .json_body import DEFAULT_MAX_JSON_DEPTH, parse_json, to_array, type_name

PIXEL_RANGES = ("0-1", "0-255")
BATCH_FIELDS = ("pixels",)
_BOOL_TOKEN = re.compile(rb"\b(?:true|false)\b")
PREDICT_FIELDS = ("instances", "pixel_range", "threshold")

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 256


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
        raise bad_request("invalid_threshold", f"{field}: expected a number, got {type_name(value)}")
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
            "invalid_type", f'request body: expected a JSON object with "instances", got {type_name(body)}'
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
            f"instances: expected an array of {spec.describe_request()}, got {type_name(instances)}",
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
        raise bad_request("invalid_type", f'expected a JSON object with "pixels", got {type_name(body)}')
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
