"""The service's OpenAPI 3.0 document (``GET /docs.json``): every route, exact request schemas built from the
loaded model (shapes, item counts, value ranges, content types) and every error in the uniform shape.

The schemas are as strict as the server: a request the schema allows is answered 200, one it forbids is
refused with a 4xx (``tests/serving/test_service_openapi.py`` runs schemathesis over all of it). The only
part JSON Schema cannot describe is the content of an image upload (bytes that decode as PNG or JPEG).
"""

from __future__ import annotations

from typing import Any

from .artifact_format import INPUT_NAME, OUTPUT_NAMES
from .settings import Settings

Schema = dict[str, Any]
ERROR_REF = {"$ref": "#/components/schemas/Error"}
OIP_ERROR_REF = {"$ref": "#/components/schemas/OipError"}
REASONS = ["unoccupied_vertex", "disagrees_with_argmax", "below_threshold"]
ERROR_TEXT = {
    400: "invalid request (the code names the problem)",
    401: "missing or wrong API key",
    404: "unknown model or version",
    408: "the body was not received within BINENC_BODY_TIMEOUT_S",
    413: "body larger than BINENC_MAX_BODY_BYTES",
    415: "unsupported content type or image format",
    429: "more than BINENC_MAX_CONCURRENCY requests in flight",
    500: "unexpected server error",
    503: "model not loaded, too many uploads in progress, or the batcher is overloaded",
    504: "no answer within BINENC_TIMEOUT_S",
}
BODY_ERRORS = (400, 408, 413, 415, 429, 500, 503, 504)
GET_ERRORS = (429, 500, 503, 504)


def nested(shape: list[int], leaf: Schema, max_batch: int) -> Schema:
    """A batch (1..max_batch items) of nested arrays with exactly ``shape`` and ``leaf`` values."""
    schema = leaf
    for dim in reversed(shape):
        schema = {"type": "array", "minItems": dim, "maxItems": dim, "items": schema}
    return {"type": "array", "minItems": 1, "maxItems": max_batch, "items": schema}


def _errors(statuses: tuple[int, ...], oip: bool = False, auth: bool = False) -> dict[str, Any]:
    ref = OIP_ERROR_REF if oip else ERROR_REF
    codes = sorted({*statuses, *((401,) if auth else ())})
    return {
        str(s): {"description": ERROR_TEXT[s], "content": {"application/json": {"schema": ref}}}
        for s in codes
    }


def _json_body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: dict[str, Any],
    body: dict[str, Any] | None = None,
    params: list[dict] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **errors}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if not secured:
        op["security"] = []
    return op


def _ok_json(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ok_text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def predict_schema(request_shape: list[int], max_batch: int, threshold: float) -> Schema:
    """``POST /predict``: 0-1 floats (``pixel_range`` absent or "0-1") or 0-255 integers (``"0-255"``)."""
    th = {"type": "number", "minimum": threshold - 1e-9, "maximum": 1}
    unit = nested(request_shape, {"type": "number", "minimum": 0, "maximum": 1}, max_batch)
    byte = nested(request_shape, {"type": "integer", "minimum": 0, "maximum": 255}, max_batch)
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": unit,
                    "pixel_range": {"type": "string", "enum": ["0-1"]},
                    "threshold": th,
                },
            },
            {
                "type": "object",
                "required": ["instances", "pixel_range"],
                "additionalProperties": False,
                "properties": {
                    "instances": byte,
                    "pixel_range": {"type": "string", "enum": ["0-255"]},
                    "threshold": th,
                },
            },
        ]
    }


def oip_infer_schema(model_shape: list[int], max_batch: int) -> Schema:
    """An OIP inference request: one FP32 input ``pixels``, flat row-major ``data`` matching its ``shape``."""
    per_item = 1
    for d in model_shape:
        per_item *= d
    inputs = [
        {
            "type": "object",
            "required": ["name", "datatype", "shape", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "enum": [INPUT_NAME]},
                "datatype": {"type": "string", "enum": ["FP32"]},
                "shape": {"type": "array", "items": {"type": "integer"}, "enum": [[n, *model_shape]]},
                "data": {
                    "type": "array",
                    "minItems": n * per_item,
                    "maxItems": n * per_item,
                    "items": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "parameters": {"type": "object", "not": {"required": ["binary_data_size"]}},
            },
        }
        for n in range(1, max_batch + 1)
    ]
    output = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
            "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"anyOf": inputs}},
            "outputs": {"type": "array", "items": output},
        },
    }


def components() -> dict[str, Any]:
    number, nullable_int = {"type": "number"}, {"type": "integer", "nullable": True}
    prediction = {
        "type": "object",
        "properties": {
            "label": {"type": "integer"},
            "class_name": {"type": "string"},
            "probabilities": {"type": "array", "items": number},
            "reliability": number,
            "dist_nearest_vertex": number,
            "dist_predicted_vertex": number,
            "dist_class_centre": number,
            "nearest_vertex_class": nullable_int,
            "nearest_class_name": {"type": "string", "nullable": True},
            "accepted": {"type": "boolean"},
            "reason": {"type": "string", "nullable": True, "enum": [*REASONS, None]},
        },
        "required": ["label", "class_name", "probabilities", "reliability", "accepted", "reason"],
    }
    envelope = {
        "type": "object",
        "required": ["model", "threshold", "predictions"],
        "properties": {
            "model": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "threshold": number,
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
            "decode_ms": number,
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "detail": {}},
            }
        },
    }
    oip_error = {
        "type": "object",
        "required": ["error", "code"],
        "additionalProperties": False,
        "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    }
    return {
        "schemas": {"Prediction": prediction, "Predictions": envelope, "Error": error, "OipError": oip_error},
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
    }


def health_paths(open_auth: bool) -> dict[str, Any]:
    live = _op("liveness (BentoML)", _ok_text("the process is up"), _errors((500,)), secured=not open_auth)
    ready = _op(
        "readiness (BentoML): 200 once the model is loaded",
        _ok_text("ready"),
        _errors((500, 503)),
        secured=not open_auth,
    )
    metrics = _op("Prometheus metrics", _ok_text("exposition format"), _errors((500,)), secured=not open_auth)
    return {
        "/livez": {"get": live},
        "/healthz": {"get": live},
        "/readyz": {"get": ready},
        "/metrics": {"get": metrics},
    }


def predict_paths(p: Any, settings: Settings, auth: bool) -> dict[str, Any]:
    max_batch = settings.max_batch
    preds = {"$ref": "#/components/schemas/Predictions"}
    image = {"type": "string", "format": "binary"}
    multipart = {
        "type": "object",
        "required": ["image"],
        "additionalProperties": False,
        "properties": {
            "image": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": image},
            "threshold": {"type": "number", "minimum": p.threshold - 1e-9, "maximum": 1},
        },
    }
    image_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": multipart,
                "encoding": {"image": {"contentType": "image/png, image/jpeg"}},
            },
            "image/png": {"schema": image},
            "image/jpeg": {"schema": image},
        },
    }
    batch = {
        "type": "object",
        "required": ["pixels"],
        "additionalProperties": False,
        "properties": {
            "pixels": nested(
                list(p.spec.model_shape), {"type": "number", "minimum": 0, "maximum": 1}, max_batch
            )
        },
    }
    return {
        "/predict": {
            "post": _op(
                "predict a batch of images sent as JSON arrays",
                _ok_json(preds),
                _errors(BODY_ERRORS, auth=auth),
                _json_body(predict_schema(list(p.spec.request_shape), max_batch, p.threshold)),
            )
        },
        "/predict_image": {
            "post": _op(
                "predict PNG/JPEG uploads (bytes must decode as PNG or JPEG)",
                _ok_json(preds),
                _errors(BODY_ERRORS, auth=auth),
                image_body,
            )
        },
        "/predict_batch": {
            "post": _op(
                "adaptive batching, calibrated threshold",
                _ok_json({"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}),
                _errors(BODY_ERRORS, auth=auth),
                _json_body(batch),
            )
        },
        "/model": {"get": _op("model card", _ok_json({"type": "object"}), _errors(GET_ERRORS, auth=auth))},
    }


def oip_paths(p: Any, settings: Settings, auth: bool, open_health: bool) -> dict[str, Any]:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [settings.oip_model_name]},
    }
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [p.version]},
    }
    obj = _ok_json({"type": "object"})
    get_err, model_err = _errors(GET_ERRORS, True, auth), _errors((*GET_ERRORS, 404), True, auth)
    infer_err = _errors((*BODY_ERRORS, 404), True, auth)
    infer_ok = {
        "description": "outputs as JSON, or a JSON header followed by raw tensors when an output asks "
        "for binary_data (Inference-Header-Content-Length gives the header's length)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    infer_body = _json_body(oip_infer_schema(list(p.spec.model_shape), settings.max_batch))
    paths: dict[str, Any] = {
        "/v2": {"get": _op("OIP server metadata", obj, get_err)},
        "/v2/health/live": {"get": _op("OIP liveness", obj, _errors((500,), True), secured=not open_health)},
        "/v2/health/ready": {
            "get": _op("OIP readiness", obj, _errors((500, 503), True), secured=not open_health)
        },
    }
    for prefix, params in (
        ("/v2/models/{name}", [name]),
        ("/v2/models/{name}/versions/{version}", [name, version]),
    ):
        paths[prefix] = {"get": _op("OIP model metadata", obj, model_err, params=params)}
        paths[prefix + "/ready"] = {"get": _op("OIP model readiness", obj, model_err, params=params)}
        paths[prefix + "/infer"] = {
            "post": _op(
                "OIP inference (JSON; the binary tensor extension is also accepted, see docs/serving.md)",
                infer_ok,
                infer_err,
                infer_body,
                params,
            )
        }
    return paths


def build_openapi(p: Any, settings: Settings) -> dict[str, Any]:
    """The whole document for predictor ``p`` under ``settings``."""
    auth = settings.auth_enabled
    open_health = not auth or "/livez" in settings.auth_open_paths
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "binenc",
            "version": p.version,
            "description": "Classifier with a reliability score and out-of-distribution rejection. "
            'Errors: {"error": {"code", "message"}}; under /v2 {"error", "code"}.',
        },
        "servers": [{"url": "."}],
        "paths": {
            **health_paths(open_health),
            **predict_paths(p, settings, auth),
            **oip_paths(p, settings, auth, open_health),
        },
        "components": components(),
    }
    if auth:
        doc["security"] = [{"apiKey": []}]
    return doc
