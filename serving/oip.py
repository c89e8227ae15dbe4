"""Open Inference Protocol (KServe / Triton "v2") REST routes over the same model.

* ``GET  /v2``                                   server metadata
* ``GET  /v2/health/live``, ``/v2/health/ready`` 200 when live / when the model is loaded
* ``GET  /v2/models/{name}[/versions/{v}]``      model metadata (input ``pixels`` FP32 [-1, C, H, W], outputs)
* ``GET  /v2/models/{name}[/versions/{v}]/ready``
* ``POST /v2/models/{name}[/versions/{v}]/infer``

The model name is ``binenc`` (``BINENC_OIP_MODEL_NAME`` overrides); the version is the first 12 hex digits
of the artifact checksum, and any version string naming another model version is a 404.

Inference takes one input ``pixels``: datatype FP32, shape [N, C, H, W], values finite and in [0, 1], either
as JSON ``data`` (flat or nested, row-major) or with the *binary tensor data extension* (what
``tritonclient.http`` sends by default: ``Inference-Header-Content-Length`` header, then raw little-endian
bytes; ``parameters.binary_data_size`` per input). Outputs are the artifact's eight outputs, named as in
:data:`serving.artifact.OUTPUT_NAMES`; a request may list a subset in ``outputs`` and ask for each in binary
(``parameters.binary_data: true``, or ``parameters.binary_data_output: true`` for all). Errors use the
service's uniform body ``{"error": {"code", "message"}}`` (the OIP ``error`` member, as an object).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import metrics
from .artifact import INPUT_NAME, OUTPUT_NAMES
from .validation import ApiError, bad_request, oip_error_body, parse_json, to_array, validate_model_tensor

SERVER_NAME = "binenc"
HEADER_LENGTH = "inference-header-content-length"
NP_TO_OIP = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}
OIP_TO_NP = {v: k for k, v in NP_TO_OIP.items()}
ONNX_ELEM_TO_OIP = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
                    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64"}


def model_name() -> str:
    return os.environ.get("BINENC_OIP_MODEL_NAME", "binenc")


def _server_version() -> str:
    try:
        from importlib.metadata import version

        return version("binenc")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "0"


def output_signature(p: Any) -> list[dict[str, Any]]:
    """Names, datatypes and shapes of the graph outputs, read from the ONNX Runtime session."""
    sigs = []
    by_name = {o.name: o for o in p.artifact.session.get_outputs()}
    for name in OUTPUT_NAMES:
        o = by_name[name]
        dtype = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32",
                 "tensor(double)": "FP64", "tensor(bool)": "BOOL"}.get(o.type, "FP32")
        shape = [d if isinstance(d, int) else -1 for d in o.shape]
        if shape:
            shape[0] = -1
        sigs.append({"name": name, "datatype": dtype, "shape": shape})
    return sigs


def _check_model(p: Any, name: str, version: str | None) -> None:
    if name != model_name():
        raise ApiError(404, "model_not_found", f"unknown model {name!r}; this server serves {model_name()!r}")
    if version not in (None, "", p.version):
        raise ApiError(404, "model_version_not_found",
                       f"model {name!r} has no version {version!r}; available: {p.version!r}")


def _split_body(raw: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = raw, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise bad_request("invalid_header", "Inference-Header-Content-Length is not an integer") from None
        if n < 0 or n > len(raw):
            raise bad_request("invalid_header",
                              f"Inference-Header-Content-Length {n} does not fit a body of {len(raw)} bytes")
        json_part, binary = raw[:n], raw[n:]
    req = parse_json(json_part)
    if not isinstance(req, dict):
        raise bad_request("invalid_type", "inference request must be a JSON object with 'inputs'")
    return req, binary


def _input_tensor(req: dict[str, Any], binary: bytes, p: Any) -> np.ndarray:
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("missing_field", f"'inputs' must be a non-empty list holding the tensor {INPUT_NAME!r}")
    names = [i.get("name") if isinstance(i, dict) else None for i in inputs]
    if names != [INPUT_NAME]:
        raise bad_request("invalid_input_name", f"expected exactly one input named {INPUT_NAME!r}, got {names}")
    spec = inputs[0]
    dtype_name = spec.get("datatype")
    if dtype_name != "FP32":
        raise bad_request("invalid_dtype", f"input {INPUT_NAME!r}: expected datatype FP32, got {dtype_name!r}")
    shape = spec.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in shape)):
        raise bad_request("invalid_shape", f"input {INPUT_NAME!r}: 'shape' must be a list of non-negative integers")
    count = int(np.prod(shape)) if shape else 1
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad_request("invalid_type", "input 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in spec:
            raise bad_request("invalid_input", "an input may carry 'data' or binary_data_size, not both")
        if not isinstance(size, int) or size != len(binary):
            raise bad_request("invalid_binary_size",
                              f"binary_data_size {size!r} does not match the {len(binary)} bytes after the header")
        if size != count * 4:
            raise bad_request("invalid_shape",
                              f"input {INPUT_NAME!r}: shape {shape} needs {count * 4} bytes of FP32, got {size}")
        arr = np.frombuffer(binary, dtype="<f4").reshape(shape)
    else:
        if binary:
            raise bad_request("invalid_binary_size", "binary data after the header but no input declares it")
        data = spec.get("data")
        if data is None:
            raise bad_request("missing_field", f"input {INPUT_NAME!r}: missing 'data'")
        arr = to_array(data, "inputs[0].data")
        if arr.size != count:
            raise bad_request("invalid_shape",
                              f"input {INPUT_NAME!r}: shape {shape} needs {count} values, got {arr.size}")
        arr = arr.reshape(shape)  # OIP sends data flattened row-major; 'shape' is authoritative
    return validate_model_tensor(arr, p.spec, p.limits, f"inputs[0] ({INPUT_NAME})")


def _requested_outputs(req: dict[str, Any]) -> list[tuple[str, bool]]:
    params = req.get("parameters") or {}
    all_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = req.get("outputs")
    if outputs is None:
        return [(name, all_binary) for name in OUTPUT_NAMES]
    if not isinstance(outputs, list):
        raise bad_request("invalid_type", "'outputs' must be a list of {name, parameters}")
    wanted = []
    for o in outputs:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUT_NAMES:
            raise bad_request("invalid_output_name", f"unknown output {name!r}; available: {list(OUTPUT_NAMES)}")
        op = o.get("parameters") or {}
        wanted.append((name, bool(op.get("binary_data", all_binary)) if isinstance(op, dict) else all_binary))
    return wanted


def oip_routes(get_predictor: Callable[[], Any]) -> list[Route]:
    from .app import handle_errors, read_body

    @handle_errors("oip", oip=True)
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": _server_version(),
                             "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        try:
            get_predictor()
        except ApiError as err:
            return JSONResponse(oip_error_body(err.code, err.message), status_code=503)
        return JSONResponse({"ready": True})

    @handle_errors("oip", oip=True)
    async def model_metadata(request: Request) -> Response:
        p = get_predictor()
        _check_model(p, request.path_params["name"], request.path_params.get("version"))
        return JSONResponse({
            "name": model_name(),
            "versions": [p.version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *p.spec.model_shape]}],
            "outputs": output_signature(p),
            "parameters": {"classes": p.classes, "threshold": p.threshold, "dataset": p.dataset},
        })

    @handle_errors("oip", oip=True)
    async def model_ready(request: Request) -> Response:
        p = get_predictor()
        _check_model(p, request.path_params["name"], request.path_params.get("version"))
        return JSONResponse({"name": model_name(), "ready": True})

    @handle_errors("oip", oip=True)
    async def infer(request: Request) -> Response:
        from .app import run_blocking

        p = get_predictor()
        _check_model(p, request.path_params["name"], request.path_params.get("version"))
        mt = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is None and mt not in ("application/json", ""):
            raise ApiError(415, "unsupported_media_type",
                           f"expected Content-Type application/json (or the binary extension with "
                           f"Inference-Header-Content-Length), got {mt!r}")
        raw = await read_body(request, p.limits.max_body_bytes)
        req, binary = _split_body(raw, header_length)
        pixels = _input_tensor(req, binary, p)
        wanted = _requested_outputs(req)
        t0 = time.perf_counter()
        outputs = await run_blocking(len(pixels), p.infer, pixels)
        accepted, reasons = p.artifact.decide(outputs)
        metrics.observe_raw("oip", accepted, outputs["reliability"].reshape(-1), reasons,
                            time.perf_counter() - t0)
        body: dict[str, Any] = {"model_name": model_name(), "model_version": p.version, "outputs": []}
        if isinstance(req.get("id"), str):
            body["id"] = req["id"]
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
        return Response(header + b"".join(blobs), media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(header))})

    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    return routes
