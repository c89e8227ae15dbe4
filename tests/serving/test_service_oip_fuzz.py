"""Fuzzing the Open Inference Protocol infer route of a real server with hypothesis-generated requests.

schemathesis cannot generate OIP infer requests (its two infer operations end in "Schema Error"), so this
builds them here: JSON and binary-extension bodies, near-valid tensors and hostile shapes (negative, zero,
2**62, products that overflow int64), wrong names, datatypes, parameters and outputs. Every answer must be a
200 with well-formed outputs or a 4xx in the OIP error shape; never a 5xx.
"""

from __future__ import annotations

import json
import struct

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.artifact_format import OUTPUT_NAMES

pytestmark = pytest.mark.slow
MODEL_SHAPE = (1, 8, 8)  # the digits fixture model
HOSTILE_INTS = st.sampled_from([-1, 0, 1, 8, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64])
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=4), st.lists(st.integers(), max_size=2)
)


def shapes() -> st.SearchStrategy[list]:
    valid = st.integers(0, 6).map(lambda n: [n, *MODEL_SHAPE])
    hostile = st.lists(st.one_of(st.integers(0, 9), HOSTILE_INTS), max_size=5)
    return st.one_of(valid, hostile, JUNK)


def values(n: int) -> st.SearchStrategy[list]:
    pixel = st.one_of(
        st.floats(0, 1, width=32), st.floats(allow_nan=False, allow_infinity=False), st.integers(-2, 300)
    )
    odd = st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.lists(st.floats(0, 1), max_size=3))
    return st.one_of(st.lists(pixel, min_size=n, max_size=n), st.lists(st.one_of(pixel, odd), max_size=n + 3))


@st.composite
def infer_requests(draw) -> tuple[bytes, dict[str, str], int]:
    """(body, headers, batch size the request declares or -1)."""
    shape = draw(shapes())
    declared = shape[0] if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[0], int) else -1
    count = 1
    if isinstance(shape, list) and all(isinstance(d, int) and 0 <= d <= 64 for d in shape):
        for d in shape:
            count *= d
    tensor: dict = {
        "name": draw(st.sampled_from(["pixels", "pixels", "pixels", "x", 5])),
        "datatype": draw(st.sampled_from(["FP32", "FP32", "FP32", "FP64", "UINT8", "BYTES", None])),
        "shape": shape,
    }
    binary = draw(st.booleans())
    tail = b""
    if binary:
        n = count if count <= 512 and draw(st.booleans()) else draw(st.integers(0, 40))
        floats = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
        tail = struct.pack(f"<{len(floats)}f", *floats) + draw(st.binary(max_size=3))
        tensor["parameters"] = {
            "binary_data_size": draw(st.sampled_from([len(tail), len(tail), 0, 2**62, -1]))
        }
    else:
        tensor["data"] = draw(values(min(count, 512)))
    if draw(st.booleans()):
        tensor[draw(st.sampled_from(["parameters", "extra", "data"]))] = draw(JUNK)
    request: dict = {"inputs": draw(st.sampled_from([[tensor], [tensor], [tensor, tensor], [], tensor]))}
    if draw(st.booleans()):
        names = st.sampled_from([*OUTPUT_NAMES, "bogus"])
        request["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": names},
                    optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": JUNK})},
                ),
                max_size=3,
            )
        )
    if draw(st.booleans()):
        request["parameters"] = {"binary_data_output": draw(st.one_of(st.booleans(), JUNK))}
    if draw(st.booleans()):
        request["id"] = draw(st.one_of(st.text(max_size=6), st.integers()))
    header = json.dumps(request).encode()
    headers = {"content-type": "application/json"}
    if binary:
        headers = {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        }
    return header + tail, headers, declared


def check_answer(r: httpx.Response, declared: int) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        body = r.json()
        assert (
            400 <= r.status_code < 500 and set(body) == {"error", "code"} and isinstance(body["error"], str)
        ), r.text
        return
    length = r.headers.get("inference-header-content-length")
    head = json.loads(r.content[: int(length)] if length else r.content)
    assert head["model_name"] == "binenc" and head["outputs"]
    for out in head["outputs"]:
        assert out["name"] in OUTPUT_NAMES and out["shape"][0] == declared, out


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=infer_requests())
def test_oip_infer_never_fails_on_generated_requests(http, case):
    body, headers, declared = case
    check_answer(http.post("/v2/models/binenc/infer", content=body, headers=headers), declared)


def test_generator_reaches_valid_requests(http):
    """The strategy is not all noise: a near-valid draw is answered 200 (else the fuzzing would only test 400s)."""
    body = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, *MODEL_SHAPE], "data": [0.5] * 128}]}
    ).encode()
    check_answer(
        http.post("/v2/models/binenc/infer", content=body, headers={"content-type": "application/json"}), 2
    )
