"""The BentoML service: ``bentoml serve`` (from the repo root, via bentofile.yaml) or
``bentoml serve serving.service:BinencService``.

Settings come from the environment once (:class:`serving.settings.Settings`). The model is
``BINENC_MODEL_PATH`` if set, else the model-store tag ``BINENC_MODEL_TAG`` if set (declared at class level, so
``bentoml build`` packs it), else the shipped reference model :data:`SHIPPED_MODEL` (packed into a Bento through
bentofile.yaml's ``include``). Before any worker starts, the settings and the model file (readable, checksum, and with
``BINENC_PUBLIC_KEY`` set the signature) are checked once: any problem stops the server with one log line and exit
status 2. Never imports torch (a test checks it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import bentoml
import numpy as np
from pydantic import AfterValidator, ValidationError
from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import Response

from . import prometheus
from .app import PredictRoutes, create_app, direct_routes
from .artifact_format import ArtifactError, read_metadata
from .errors import ApiError
from .handlers import Offload
from .images import set_pillow_pixel_cap
from .json_body import to_array
from .limits import BodyReader, WorkLimit
from .logjson import use_json_logs
from .middleware import ApiDocs, Authentication, DirectRoutes, RequestMetrics, UniformErrors
from .openapi import build_openapi
from .predictor import Predictor
from .responses import QuietRefusals
from .settings import HEALTH_PATHS, Settings, SettingsError
from .signing import KeyFileError, load_public_key, verify_artifact, verify_file
from .ui import UiPage
from .validation import check_batch_body, validate_model_tensor

log = logging.getLogger("binenc.serving")

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "fashion-mnist_bin_enc" / "model.onnx"


def refuse_to_serve(err: Exception) -> NoReturn:
    """One log line and exit status 2 (before any worker starts, this ends ``bentoml serve``)."""
    log.error("binenc: refusing to serve: %s", err)
    raise SystemExit(2) from None


try:
    SETTINGS = Settings.from_env()
except SettingsError as err:
    refuse_to_serve(err)
if SETTINGS.json_logs:
    use_json_logs()


def model_location(settings: Settings) -> tuple[Path, str]:
    """The model file to serve and how it was named (``file:...``, ``bentoml:TAG`` or ``shipped:...``)."""
    if settings.model_path:
        return Path(settings.model_path), f"file:{settings.model_path}"
    if settings.model_tag:
        stored = bentoml.models.get(settings.model_tag)
        return Path(stored.path_of("model.onnx")), f"bentoml:{stored.tag}"
    return SHIPPED_MODEL, f"shipped:{SHIPPED_MODEL.parent.name}"


def check_model(settings: Settings) -> None:
    """The model file opens, its checksum holds and (with a public key) its signature verifies; else stop.
    Runs at import, so ``bentoml serve`` stops here before it starts a worker (no restart loop)."""
    try:
        path, _ = model_location(settings)
        if settings.public_key:
            verify_file(path, settings.public_key)
        else:
            read_metadata(path, verify=True)
    except (ArtifactError, KeyFileError, bentoml.exceptions.NotFound) as err:
        refuse_to_serve(err)


check_model(SETTINGS)


def current_predictor() -> Predictor | None:
    """The predictor of this worker's service instance, or None before it is created."""
    try:
        return bentoml.get_current_service().predictor
    except (bentoml.exceptions.BentoMLException, AttributeError):
        return None


def _batch_pixels(value: list[Any]) -> np.ndarray:
    """Validate one ``/predict_batch`` request before it joins a batch (a bad request must not fail others)."""
    p = current_predictor()
    if p is None:
        raise PydanticCustomError("model_not_loaded", "the model is not loaded yet")
    try:
        # Booleans were refused on the raw body (check_batch_body); skip the per-element walk here.
        arr = to_array(value, "pixels", check_literals=False)
        return validate_model_tensor(arr, p.spec, p.limits, "pixels")
    except ApiError as err:
        raise PydanticCustomError(err.code, err.message) from None


BatchPixels = Annotated[list[Any], AfterValidator(_batch_pixels)]


def service_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "workers": settings.workers,
        # serving.limits.WorkLimit answers a uniform 504 first; BentoML's own timeout is a backstop.
        "traffic": {"timeout": settings.timeout_s + settings.body_timeout_s + 10},
        # BentoML's HTTP metrics label by raw path (any client could add series); serving.middleware.RequestMetrics
        # counts requests by route template instead, and the service serves /metrics itself.
        "metrics": {"enabled": False},
    }
    if not settings.access_log:
        config["logging"] = {"access": {"enabled": False}}
    if not settings.trace_predict:
        # OpenTelemetry spans cost ~0.5 ms CPU per request even with no exporter configured.
        config["tracing"] = {"excluded_urls": ["/predict", "/predict_image", "/predict_batch", "/v2/models"]}
    return config


OFFLOAD = Offload(SETTINGS.inline_max, SETTINGS.infer_threads, SETTINGS.decode_threads)


@bentoml.service(name="binenc", **service_config(SETTINGS))
@bentoml.asgi_app(create_app(current_predictor, OFFLOAD, SETTINGS.oip_model_name), path="/")
class BinencService:
    if SETTINGS.model_tag and not SETTINGS.model_path:
        bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        s = SETTINGS
        if s.model_tag and not s.model_path:
            path, source = Path(self.bento_model.path_of("model.onnx")), f"bentoml:{self.bento_model.tag}"
        else:
            path, source = model_location(s)
        set_pillow_pixel_cap(s.max_image_pixels)
        logging.getLogger("bentoml._internal.server.http_app").addFilter(
            QuietRefusals(ValidationError, bentoml.exceptions.ServiceUnavailable)
        )
        self.predictor = Predictor.from_path(
            path,
            s.limits,
            source=source,
            threads=s.ort_threads,
            max_image_pixels=s.max_image_pixels,
            max_image_side=s.max_image_side,
            max_request_pixels=s.max_request_pixels,
            card_geometry=s.card_geometry,
        )
        if s.public_key:
            verify_artifact(self.predictor.artifact, load_public_key(s.public_key))
        # Warm the session (first ORT run allocates) so the first real request is not the slow one.
        self.predictor.infer(np.zeros((1, *self.predictor.spec.model_shape), dtype=np.float32))
        log.info("binenc model loaded from %s (provider %s)", source, self.predictor.artifact.provider)

    @bentoml.api(
        route="/predict_batch",
        batchable=True,
        max_batch_size=SETTINGS.max_batch,
        max_latency_ms=SETTINGS.batch_max_latency_ms,
    )
    def predict_batch(self, pixels: BatchPixels) -> list[dict[str, Any]]:
        """Adaptive batching: float32 N×C×H×W in [0, 1] → one prediction per instance (calibrated threshold)."""
        arr = pixels if isinstance(pixels, np.ndarray) else np.asarray(pixels, dtype=np.float32)
        return self.predictor.predict(np.ascontiguousarray(arr, dtype=np.float32), None, "predict_batch")


def _openapi_document() -> bytes | None:
    p = current_predictor()
    return None if p is None else json.dumps(build_openapi(p, SETTINGS)).encode()


async def _metrics(request: Request) -> Response:
    body, media = prometheus.exposition()
    return Response(body, media_type=media)


BinencService.add_asgi_middleware(RequestMetrics)
BinencService.add_asgi_middleware(UniformErrors)
if SETTINGS.auth_enabled:  # outside ApiDocs, so BINENC_AUTH_OPEN_PATHS governs /docs.json like every path
    BinencService.add_asgi_middleware(
        Authentication, key_hashes=SETTINGS.api_key_hashes, open_paths=SETTINGS.auth_open_paths
    )
BinencService.add_asgi_middleware(ApiDocs, document=_openapi_document)
BinencService.add_asgi_middleware(
    BodyReader,
    max_body=SETTINGS.max_body_bytes,
    deadline_s=SETTINGS.body_timeout_s,
    max_uploads=SETTINGS.max_uploads,
    checks={"/predict_batch": lambda raw: check_batch_body(raw, SETTINGS.limits)},
    json_only=("/predict_batch",),
)
BinencService.add_asgi_middleware(
    WorkLimit,
    max_concurrency=SETTINGS.max_concurrency,
    timeout_s=SETTINGS.timeout_s,
    exempt=(*HEALTH_PATHS, "/docs.json"),
)
BinencService.add_asgi_middleware(
    DirectRoutes,
    routes={**direct_routes(PredictRoutes(current_predictor, OFFLOAD)), ("GET", "/metrics"): _metrics},
)
if SETTINGS.ui:
    BinencService.add_asgi_middleware(UiPage)
