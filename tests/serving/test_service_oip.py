"""Open Inference Protocol v2: the real Triton HTTP client talks to the running BentoML service."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.artifact import load_artifact
from serving.artifact_format import OUTPUT_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(served):
    c = triton.InferenceServerClient(
        served.url.removeprefix("http://"), connection_timeout=30, network_timeout=30
    )
    yield c
    c.close()


def infer(client, x: np.ndarray, binary: bool, outputs=None, model="binenc"):
    inp = triton.InferInput("pixels", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    req = [triton.InferRequestedOutput(n, binary_data=binary) for n in outputs] if outputs else None
    return client.infer(model, [inp], outputs=req)


def test_health_and_metadata(client, digits_artifact):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("binenc")
    assert not client.is_model_ready("other")
    meta = client.get_model_metadata("binenc")
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    types = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert list(types) == list(OUTPUT_NAMES)
    assert types["nearest_vertex_class"] == "INT64" and types["reliability"] == "FP32"
    assert client.get_server_metadata()["name"] == "binenc"
    assert client.is_model_ready("binenc", model_version=meta["versions"][0])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_in_process(client, digits_artifact, digits_pixels, binary):
    x, _ = digits_pixels
    ref = load_artifact(digits_artifact).run(x[:8])
    res = infer(client, x[:8], binary)
    for name in OUTPUT_NAMES:
        got = res.as_numpy(name)
        assert got.dtype == ref[name].dtype and got.shape == ref[name].shape, name
        np.testing.assert_allclose(got, ref[name], atol=1e-5, err_msg=name)
    sub = infer(client, x[:2], binary, outputs=["reliability", "nearest_vertex_class"])
    assert sub.as_numpy("logits") is None
    np.testing.assert_allclose(sub.as_numpy("reliability"), ref["reliability"][:2], atol=1e-5)


@pytest.mark.parametrize(
    ("x", "status", "match"),
    [
        (np.zeros((1, 1, 8, 7), np.float32), "400", "expected N×1×8×8"),
        (np.full((1, 1, 8, 8), 2.0, np.float32), "400", "outside"),
        (np.full((1, 1, 8, 8), np.nan, np.float32), "400", "not finite"),
        (np.zeros((0, 1, 8, 8), np.float32), "400", "empty"),
    ],
    ids=["shape", "range", "nan", "empty"],
)
def test_bad_infer_is_a_readable_4xx(client, x, status, match):
    with pytest.raises(InferenceServerException, match=match) as info:
        infer(client, x, binary=True)
    assert info.value.status() == status
    assert client.is_server_ready()


def test_wrong_datatype_and_unknown_model(client, digits_pixels):
    x, _ = digits_pixels
    inp = triton.InferInput("pixels", [1, 1, 8, 8], "FP64")
    inp.set_data_from_numpy(x[:1].astype(np.float64))
    with pytest.raises(InferenceServerException, match="FP32") as info:
        client.infer("binenc", [inp])
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model") as info:
        infer(client, x[:1], binary=True, model="nope")
    assert info.value.status() == "404"
