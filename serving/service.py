"""The BentoML service: ``bentoml serve`` (from the repo root, via bentofile.yaml) or
``bentoml serve serving.service:BinencService``.

Which model: ``BINENC_MODEL_PATH`` (a ``model.onnx`` file) if set, else the BentoML model-store tag
``BINENC_MODEL_TAG`` (default ``binenc:latest``, what ``python -m training.export RUN --register`` stores).
The tag is declared at class level, so ``bentoml build`` packs that model into the Bento.

Routes: ``POST /predict_batch`` (adaptive batching, declared here) plus the Starlette app from
:mod:`serving.app` (``/predict``, ``/predict_image``, ``/model``, ``/v2/...``); BentoML adds ``/livez``,
``/readyz``, ``/healthz`` and ``/metrics``. Never imports torch (a test checks it).
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from .app import GuardMiddleware, create_app
from .predictor import Predictor, resolve_model_path
from .validation import ApiError, Limits, to_array, validate_model_tensor

log = logging.getLogger("binenc.serving")

MODEL_PATH = os.environ.get("BINENC_MODEL_PATH")
MODEL_TAG = os.environ.get("BINENC_MODEL_TAG", "binenc:latest")
LIMITS = Limits.from_env()
BATCH_MAX_LATENCY_MS = int(os.environ.get("BINENC_BATCH_MAX_LATENCY_MS", "1000"))
TIMEOUT_S = int(os.environ.get("BINENC_TIMEOUT_S", "30"))


class _Active:
    """The predictor of this worker process, for the Starlette routes and the batch-route validator."""

    predictor: Predictor | None = None


def _get_predictor() -> Predictor | None:
    return _Active.predictor


def _batch_pixels(value: list[Any]) -> np.ndarray:
    """Validate one ``/predict_batch`` request before it joins a batch (a bad request must not fail others)."""
    p = _Active.predictor
    if p is None:
        raise PydanticCustomError("model_not_loaded", "the model is not loaded yet")
    try:
        # Booleans were already refused by GuardMiddleware on the raw body; skip the per-element walk here.
        arr = to_array(value, "pixels", check_literals=False)
        return validate_model_tensor(arr, p.spec, p.limits, "pixels")
    except ApiError as err:
        raise PydanticCustomError(err.code, err.message) from None


BatchPixels = Annotated[list[Any], AfterValidator(_batch_pixels)]


_CONFIG: dict[str, Any] = {
    "workers": 1,
    # GuardMiddleware enforces BINENC_TIMEOUT_S with a uniform 504; BentoML's own timeout is only a backstop.
    "traffic": {"timeout": TIMEOUT_S + 10},
    "metrics": {"enabled": True},
}
if os.environ.get("BINENC_ACCESS_LOG", "1") == "0":  # one log line per request; off saves ~0.1 ms
    _CONFIG["logging"] = {"access": {"enabled": False}}
if os.environ.get("BINENC_TRACE_PREDICT", "0") != "1":
    # OpenTelemetry spans cost ~0.5 ms CPU per request (3 spans) even with no exporter configured; prediction
    # routes are left out unless BINENC_TRACE_PREDICT=1 (set it when a tracing exporter is configured).
    _CONFIG["tracing"] = {"excluded_urls": ["/predict", "/predict_image", "/predict_batch", "/v2/models"]}


@bentoml.service(name="binenc", **_CONFIG)
@bentoml.asgi_app(create_app(_get_predictor), path="/")
class BinencService:
    if not MODEL_PATH:
        bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        if MODEL_PATH:
            path, source = resolve_model_path()
        else:
            stored = self.bento_model
            path, source = stored.path_of("model.onnx"), f"bentoml:{stored.tag}"
        self.predictor = Predictor.from_path(path, LIMITS, source=source)
        # Warm the session (first ORT run allocates) so the first real request is not the slow one.
        c, h, w = self.predictor.spec.model_shape
        self.predictor.infer(np.zeros((1, c, h, w), dtype=np.float32))
        _Active.predictor = self.predictor
        log.info("binenc model loaded from %s (provider %s)", source, self.predictor.artifact.provider)

    @bentoml.api(
        route="/predict_batch",
        batchable=True,
        max_batch_size=LIMITS.max_batch,
        max_latency_ms=BATCH_MAX_LATENCY_MS,
    )
    def predict_batch(self, pixels: BatchPixels) -> list[dict[str, Any]]:
        """Adaptive batching: float32 N×C×H×W in [0, 1] → one prediction per instance (calibrated threshold)."""
        arr = pixels if isinstance(pixels, np.ndarray) else np.asarray(pixels, dtype=np.float32)
        return self.predictor.predict(np.ascontiguousarray(arr, dtype=np.float32), None, "predict_batch")


BinencService.add_asgi_middleware(GuardMiddleware)
