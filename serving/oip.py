"""Open Inference Protocol (KServe / Triton "v2") REST routes over the same model.

* ``GET  /v2``                                   server metadata
* ``GET  /v2/health/live``, ``/v2/health/ready`` 200 when live / when the model is loaded
* ``GET  /v2/models/{name}[/versions/{v}]``      model metadata (input ``pixels`` FP32 [-1, C, H, W], outputs)
* ``GET  /v2/models/{name}[/versions/{v}]/ready``
* ``POST /v2/models/{name}[/versions/{v}]/infer``

The model name is ``Settings.oip_model_name`` (``binenc``); the version is the first 12 hex digits of the
artifact checksum, and any version string naming another model version is a 404.

Inference takes one input ``pixels``: datatype FP32, shape [N, C, H, W], values finite and in [0, 1], either
as JSON ``data`` (flat or nested, row-major) or with the *binary tensor data extension* (what
``tritonclient.http`` sends by default: ``Inference-Header-Content-Length`` header, then raw little-endian
bytes; ``parameters.binary_data_size`` per input). Outputs are the artifact's eight outputs, named as in
:data:`serving.artifact_format.OUTPUT_NAMES`; a request may list a subset in ``outputs`` and ask for each in binary
(``parameters.binary_data: true``, or ``parameters.binary_data_output: true`` for all). Errors use the
service's uniform body ``{"error": {"code", "message"}}`` (the OIP ``error`` member, as an object).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import prometheus
from .artifact_format import INPUT_NAME, OUTPUT_NAMES
from .errors import ApiError, bad_request, oip_error_body
from .handlers import Offload, handle_errors, media_type
from .json_body import parse_json, to_array
from .validation import check_batch_size, validate_model_tensor

SERVER_NAME = "binenc"
HEADER_LENGTH = "inference-header-content-length"
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
INPUT_FIELDS = ("name", "datatype", "shape", "data", "parameters")
NP_TO_OIP = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


def _server_version() -> str:
    try:
        return version("binenc")
    except PackageNotFoundError:  # pragma: no cover - not installed as a distribution
        return "0"


def output_signature(p: Any) -> list[dict[str, Any]]:
    """Names, datatypes and shapes of the graph outputs, read from the ONNX Runtime session."""
    sigs = []
    by_name = {o.name: o for o in p.artifact.session.get_outputs()}
    for name in OUTPUT_NAMES:
        o = by_name[name]
        dtype = {
            "tensor(float)": "FP32",
            "tensor(int64)": "INT64",
            "tensor(int32)": "INT32",
            "tensor(double)": "FP64",
            "tensor(bool)": "BOOL",
        }.get(o.type, "FP32")
        shape = [d if isinstance(d, int) else -1 for d in o.shape]
        if shape:
            shape[0] = -1
        sigs.append({"name": name, "datatype": dtype, "shape": shape})
    return sigs


def check_model(p: Any, served: str, name: str, model_version: str | None) -> None:
    if name != served:
        raise ApiError(404, "model_not_found", f"unknown model {name!r}; this server serves {served!r}")
    if model_version not in (None, "", p.version):
        raise ApiError(
            404,
            "model_version_not_found",
            f"model {name!r} has no version {model_version!r}; available: {p.version!r}",
        )


def _split_body(raw: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = raw, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise bad_request("invalid_header", "Inference-Header-Content-Length is not an integer") from None
        if n < 0 or n > len(raw):
            raise bad_request(
                "invalid_header",
                f"Inference-Header-Content-Length {n} does not fit a body of {len(raw)} bytes",
            )
        json_part, binary = raw[:n], raw[n:]
    req = parse_json(json_part)
    if not isinstance(req, dict):
        raise bad_request("invalid_type", "inference request must be a JSON object with 'inputs'")
    _known_fields(req, REQUEST_FIELDS, "the inference request")
    if "id" in req and not isinstance(req["id"], str):
        raise bad_request("invalid_type", "'id' must be a string")
    return req, binary


def _known_fields(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise bad_request(
            "unknown_field",
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}",
        )


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``parameters`` object of ``obj`` ({} when absent)."""
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise bad_request("invalid_type", f"{where}: 'parameters' must be an object")
    return params


def _flag(params: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise bad_request("invalid_type", f"{where}: parameters.{key} must be true or false")
    return value


def _input_tensor(req: dict[str, Any], binary: bytes, p: Any) -> np.ndarray:
    """The request's one input as the model tensor: its declaration, then its data (binary or JSON), checked."""
    spec = _input_spec(req)
    shape = _declared_shape(spec, p)
    params = _params(spec, f"input {INPUT_NAME!r}")
    size = params.get("binary_data_size")
    if size is not None:
        arr = _binary_data(spec, binary, shape, size)
    else:
        arr = _json_data(spec, params, binary, shape)
    return validate_model_tensor(arr, p.spec, p.limits, f"inputs[0] ({INPUT_NAME})")


def _input_spec(req: dict[str, Any]) -> dict[str, Any]:
    """The one input's declaration: exactly one input named :data:`INPUT_NAME`, known fields, FP32."""
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request(
            "missing_field", f"'inputs' must be a non-empty list holding the tensor {INPUT_NAME!r}"
        )
    names = [i.get("name") if isinstance(i, dict) else None for i in inputs]
    if names != [INPUT_NAME]:
        raise bad_request(
            "invalid_input_name", f"expected exactly one input named {INPUT_NAME!r}, got {names}"
        )
    spec = inputs[0]
    _known_fields(spec, INPUT_FIELDS, f"input {INPUT_NAME!r}")
    dtype_name = spec.get("datatype")
    if dtype_name != "FP32":
        raise bad_request(
            "invalid_dtype", f"input {INPUT_NAME!r}: expected datatype FP32, got {dtype_name!r}"
        )
    return spec


def _declared_shape(spec: dict[str, Any], p: Any) -> list[int]:
    """The input's declared shape: non-negative integers, the model's N×C×H×W, a batch within the cap."""
    shape = spec.get("shape")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise bad_request(
            "invalid_shape", f"input {INPUT_NAME!r}: 'shape' must be a list of non-negative integers"
        )
    # The declared shape is checked against the model before anything is sized from it (a product of
    # client-chosen dimensions overflows int64).
    if len(shape) != 4 or tuple(shape[1:]) != p.spec.model_shape:
        got = "×".join(map(str, shape)) if shape else "a scalar"
        raise bad_request(
            "invalid_shape", f"inputs[0] ({INPUT_NAME}): expected {p.spec.describe_model()}, got {got}"
        )
    check_batch_size(shape[0], p.limits, f"inputs[0] ({INPUT_NAME})")
    return shape


def _binary_data(spec: dict[str, Any], binary: bytes, shape: list[int], size: Any) -> np.ndarray:
    """The tensor sent as raw FP32 bytes after the JSON header (``binary_data_size``)."""
    count = math.prod(shape)
    if "data" in spec:
        raise bad_request("invalid_input", "an input may carry 'data' or binary_data_size, not both")
    if not isinstance(size, int) or size != len(binary):
        raise bad_request(
            "invalid_binary_size",
            f"binary_data_size {size!r} does not match the {len(binary)} bytes after the header",
        )
    if size != count * 4:
        raise bad_request(
            "invalid_shape",
            f"input {INPUT_NAME!r}: shape {shape} needs {count * 4} bytes of FP32, got {size}",
        )
    return np.frombuffer(binary, dtype="<f4").reshape(shape)


def _json_data(spec: dict[str, Any], params: dict[str, Any], binary: bytes, shape: list[int]) -> np.ndarray:
    """The tensor sent as a flat JSON array in ``data`` (row-major; ``shape`` is authoritative)."""
    count = math.prod(shape)
    if binary:
        raise bad_request("invalid_binary_size", "binary data after the header but no input declares it")
    data = spec.get("data")
    if data is None:
        raise bad_request("missing_field", f"input {INPUT_NAME!r}: missing 'data'")
    if "binary_data_size" in params:
        raise bad_request("invalid_input", "an input may carry 'data' or binary_data_size, not both")
    arr = to_array(data, "inputs[0].data")
    if arr.ndim != 1:
        raise bad_request(
            "invalid_shape",
            f"input {INPUT_NAME!r}: 'data' must be a flat array (row-major), got {arr.ndim} levels of nesting",
        )
    if arr.size != count:
        raise bad_request(
            "invalid_shape", f"input {INPUT_NAME!r}: shape {shape} needs {count} values, got {arr.size}"
        )
    return arr.reshape(shape)  # OIP sends data flattened row-major; 'shape' is authoritative


def _requested_outputs(req: dict[str, Any]) -> list[tuple[str, bool]]:
    all_binary = _flag(_params(req, "the inference request"), "binary_data_output", "the inference request")
    if "outputs" not in req:
        return [(name, all_binary) for name in OUTPUT_NAMES]
    outputs = req["outputs"]
    if not isinstance(outputs, list):
        raise bad_request("invalid_type", "'outputs' must be a list of {name, parameters}")
    wanted = []
    for o in outputs:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUT_NAMES:
            raise bad_request(
                "invalid_output_name", f"unknown output {name!r}; available: {list(OUTPUT_NAMES)}"
            )
        _known_fields(o, ("name", "parameters"), f"output {name!r}")
        where = f"output {name!r}"
        wanted.append((name, _flag(_params(o, where), "binary_data", where, all_binary)))
    return wanted


def encode_outputs(
    outputs: dict[str, np.ndarray], wanted: list[tuple[str, bool]], head: dict[str, Any]
) -> Response:
    """The inference response: JSON ``data`` per output, or raw little-endian bytes after the JSON header."""
    body = {**head, "outputs": []}
    blobs = []
    for name, as_binary in wanted:
        arr = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": NP_TO_OIP[arr.dtype], "shape": list(arr.shape)}
        if as_binary:
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        body["outputs"].append(entry)
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


class OipRoutes:
    """The ``/v2`` routes over the predictor returned by ``get_predictor`` (raises 503 until it is loaded)."""

    def __init__(
        self, get_predictor: Callable[[], Any], offload: Offload, model_name: str = SERVER_NAME
    ) -> None:
        self.get_predictor = get_predictor
        self.offload = offload
        self.model_name = model_name

    def _model(self, request: Request) -> Any:
        p = self.get_predictor()
        check_model(p, self.model_name, request.path_params["name"], request.path_params.get("version"))
        return p

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {"name": SERVER_NAME, "version": _server_version(), "extensions": ["binary_tensor_data"]}
        )

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        try:
            self.get_predictor()
        except ApiError as err:
            return JSONResponse(oip_error_body(err.code, err.message), status_code=503)
        return JSONResponse({"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        p = self._model(request)
        return JSONResponse(
            {
                "name": self.model_name,
                "versions": [p.version],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *p.spec.model_shape]}],
                "outputs": output_signature(p),
                "parameters": {"classes": p.classes, "threshold": p.threshold, "dataset": p.dataset},
            }
        )

    async def model_ready(self, request: Request) -> Response:
        self._model(request)
        return JSONResponse({"name": self.model_name, "ready": True})

    async def infer(self, request: Request) -> Response:
        p = self._model(request)
        mt = media_type(request)
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is None and mt not in ("application/json", ""):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"expected Content-Type application/json (or the binary extension with "
                f"Inference-Header-Content-Length), got {mt!r}",
            )
        req, binary = _split_body(await request.body(), header_length)
        pixels = _input_tensor(req, binary, p)
        wanted = _requested_outputs(req)
        t0 = time.perf_counter()
        outputs = await self.offload.run(len(pixels), p.infer, pixels)
        accepted, reasons = p.artifact.decide(outputs)
        prometheus.observe_raw(
            "oip", accepted, outputs["reliability"].reshape(-1), reasons, time.perf_counter() - t0
        )
        head: dict[str, Any] = {"model_name": self.model_name, "model_version": p.version}
        if isinstance(req.get("id"), str):
            head["id"] = req["id"]
        return encode_outputs(outputs, wanted, head)

    def routes(self) -> list[Route]:
        wrap = handle_errors(oip=True)
        routes = [
            Route("/v2", wrap(self.server_metadata), methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
        ]
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                Route(prefix, wrap(self.model_metadata), methods=["GET"]),
                Route(prefix + "/ready", wrap(self.model_ready), methods=["GET"]),
                Route(prefix + "/infer", wrap(self.infer), methods=["POST"]),
            ]
        return routes
