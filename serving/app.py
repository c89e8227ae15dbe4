"""The Starlette app mounted into the BentoML service: ``/predict``, ``/predict_image``, ``/model`` and the
Open Inference Protocol routes (:mod:`serving.oip`). ``/predict_batch`` is a BentoML API method on the service
class itself; the middleware around everything is in :mod:`serving.middleware`.

Routes read request bodies that :class:`serving.limits.BodyReader` has already received in full.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic_core
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import ApiError
from .handlers import Endpoint, Offload, handle_errors, media_type, require_media_type
from .images import check_images, decode_images
from .json_body import parse_json
from .oip import OipRoutes
from .validation import parse_predict, validate_threshold

PredictorGetter = Callable[[], Any]
URL_PREFIXES = ("http://", "https://", "ftp://", "file://", "s3://", "gs://", "data:", "www.")
IMAGE_TYPES = ("multipart/form-data", "image/png", "image/jpeg")


def _refuse_url_or_type(body: bytes, request: Request) -> None:
    """A JSON/form/text body on /predict_image: name the URL case explicitly, else a 415."""
    text = body[: 64 * 1024].decode("utf-8", "replace").lower()
    if any(s in text for s in ("http://", "https://", "http%3a", "https%3a", "ftp://", "file://")):
        raise ApiError(
            400,
            "url_not_supported",
            "the request carries a URL, not an image; the server never fetches URLs: download the image "
            "and upload its bytes as multipart/form-data field 'image'",
        )
    require_media_type(request, IMAGE_TYPES)


class FastJSON(Response):
    """JSON rendered by pydantic-core (several times faster than :mod:`json` on float lists)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def envelope(p: Any, preds: list[dict], threshold: float | None) -> dict[str, Any]:
    return {
        "model": {"name": p.model_name, "version": p.version},
        "threshold": p.threshold if threshold is None else threshold,
        "predictions": preds,
    }


class PredictRoutes:
    """``/predict``, ``/predict_image`` and ``/model`` over the predictor from ``get_predictor``."""

    def __init__(self, get_predictor: PredictorGetter, offload: Offload) -> None:
        self._get = get_predictor
        self.offload = offload

    def predictor(self) -> Any:
        p = self._get()
        if p is None:
            raise ApiError(
                503, "model_not_loaded", "the model is not loaded yet; retry when /readyz answers 200"
            )
        return p

    async def predict(self, request: Request) -> Response:
        p = self.predictor()
        require_media_type(request, ("application/json",))
        raw = await request.body()
        if len(raw) > 256 * 1024:  # large bodies are parsed off the event loop
            req = await self.offload.thread(_parse_predict, raw, p)
        else:
            req = _parse_predict(raw, p)
        preds = await self.offload.run(len(req.pixels), p.predict, req.pixels, req.threshold, "predict")
        return FastJSON(envelope(p, preds, req.threshold))

    async def predict_image(self, request: Request) -> Response:
        p = self.predictor()
        if media_type(request) in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
            _refuse_url_or_type(await request.body(), request)
        mt = require_media_type(request, IMAGE_TYPES)
        threshold = None
        if mt == "multipart/form-data":
            files, threshold = await _read_multipart(request, p)
        else:
            files = [await request.body()]
        t0 = time.perf_counter()
        check_images(
            files, p.policy
        )  # headers and the pixel budget: refusals never queue for the decode pool
        arrays = await self.offload.cancellable(decode_images, files, p.policy)
        pixels = np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
        preds = await self.offload.run(len(pixels), p.predict, pixels, threshold, "predict_image")
        out = envelope(p, preds, threshold)
        out["decode_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        return FastJSON(out)

    async def model_card(self, request: Request) -> Response:
        return JSONResponse(self.predictor().model_card())


def direct_routes(routes: PredictRoutes) -> dict[tuple[str, str], Endpoint]:
    """``(method, path) → endpoint`` of the exact-path routes (also what :class:`DirectRoutes` dispatches)."""
    wrap = handle_errors()
    return {
        ("POST", "/predict"): wrap(routes.predict),
        ("POST", "/predict_image"): wrap(routes.predict_image),
        ("GET", "/model"): wrap(routes.model_card),
    }


def create_app(
    get_predictor: PredictorGetter, offload: Offload | None = None, oip_model_name: str = "binenc"
) -> Starlette:
    """The Starlette app; ``get_predictor()`` returns the loaded :class:`~serving.predictor.Predictor` or None."""
    offload = offload or Offload(inline_max=8, threads=1)
    routes = PredictRoutes(get_predictor, offload)
    oip = OipRoutes(routes.predictor, offload, oip_model_name)
    direct = [
        Route(path, endpoint, methods=[method]) for (method, path), endpoint in direct_routes(routes).items()
    ]
    return Starlette(routes=[*direct, *oip.routes()])


def _looks_like_url(text: str) -> bool:
    return text.strip().lower().startswith(URL_PREFIXES)


def _parse_form_threshold(value: Any, calibrated: float) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_threshold", "threshold: expected a text field holding a number")
    try:
        number = float(value)
    except ValueError:
        raise ApiError(
            400, "invalid_threshold", f"threshold: expected a number, got {value[:40]!r}"
        ) from None
    return validate_threshold(number, calibrated)


def _parse_predict(raw: bytes, p: Any):
    body = parse_json(raw, p.limits.max_json_depth)
    return parse_predict(body, p.spec, p.limits, p.threshold, raw=raw)


async def _read_multipart(request: Request, p: Any) -> tuple[list[bytes], float | None]:
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
            raise ApiError(
                400,
                "unknown_field",
                f"unknown form field(s) {', '.join(map(repr, unknown))}; send the file(s) as 'image' and "
                "an optional 'threshold'",
            )
        items = form.getlist("image")
        if not items:
            raise ApiError(400, "missing_field", "missing form field 'image' (a PNG or JPEG file upload)")
        if len(items) > limits.max_batch:
            raise ApiError(
                400, "batch_too_large", f"{len(items)} images exceed the server cap of {limits.max_batch}"
            )
        files: list[bytes] = []
        for item in items:
            if isinstance(item, UploadFile):
                files.append(await item.read())
            elif _looks_like_url(item):
                raise ApiError(
                    400,
                    "url_not_supported",
                    f"field 'image' holds a URL ({item[:60]!r}), not a file; the server never fetches "
                    "URLs: download the image and upload its bytes",
                )
            else:
                raise ApiError(
                    400,
                    "expected_file",
                    "field 'image' holds text, not a file; upload the PNG/JPEG bytes as a file part "
                    "(filename set)",
                )
        thresholds = form.getlist("threshold")
        if len(thresholds) > 1:
            raise ApiError(400, "invalid_threshold", "threshold given more than once")
        threshold = _parse_form_threshold(thresholds[0] if thresholds else None, p.threshold)
        return files, threshold
    finally:
        await form.close()
