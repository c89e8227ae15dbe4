"""Depth 3: real HTTP against one real ``bentoml serve`` subprocess (session fixture ``served``)."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

from serving.artifact import load_artifact

pytestmark = pytest.mark.slow


def png_bytes(a: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


def drawn(image01: np.ndarray, size: int = 120) -> np.ndarray:
    """A digits image as a user would upload it: big, dark strokes on white paper."""
    a = (255 - np.round(image01 * 255)).astype(np.uint8)
    return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.NEAREST))


def assert_uniform_error(r: httpx.Response, status: int | None, code: str) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and len(err["message"]) > 10, body


# --------------------------------------------------------------------------- happy paths
def test_predict_matches_in_process_model(http, served, digits_artifact, digits_pixels):
    x, labels = digits_pixels
    r = http.post("/predict", json={"instances": x[:, 0].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    art = load_artifact(digits_artifact)
    ref = art.run(x)
    accepted, reasons = art.decide(ref)
    assert body["threshold"] == pytest.approx(art.threshold)
    preds = body["predictions"]
    assert len(preds) == len(x)
    for i, p in enumerate(preds):
        assert set(p) == {
            "label",
            "class_name",
            "probabilities",
            "reliability",
            "dist_nearest_vertex",
            "dist_predicted_vertex",
            "dist_class_centre",
            "nearest_vertex_class",
            "nearest_class_name",
            "accepted",
            "reason",
        }
        assert p["label"] == int(ref["logits"][i].argmax()) and p["class_name"] == art.classes[p["label"]]
        assert p["reliability"] == pytest.approx(float(ref["reliability"][i]), abs=1e-6)
        assert p["dist_predicted_vertex"] == pytest.approx(float(ref["dist_predicted_vertex"][i]), abs=1e-6)
        assert p["dist_nearest_vertex"] == pytest.approx(float(ref["dist_nearest_vertex"][i]), abs=1e-6)
        assert p["dist_class_centre"] == pytest.approx(float(ref["dist_class_centre"][i]), abs=1e-6)
        np.testing.assert_allclose(p["probabilities"], ref["probs"][i], atol=1e-6)
        nc = int(ref["nearest_vertex_class"][i])
        assert p["nearest_vertex_class"] == (nc if nc >= 0 else None)
        assert p["nearest_class_name"] == (art.classes[nc] if nc >= 0 else None)
        assert p["accepted"] == bool(accepted[i]) and p["reason"] == reasons[i]
    assert np.mean([p["label"] for p in preds] == labels) > 0.85
    # 0-255 integers are the same request
    r255 = http.post(
        "/predict", json={"instances": np.round(x[:4, 0] * 255).astype(int).tolist(), "pixel_range": "0-255"}
    )
    assert [p["label"] for p in r255.json()["predictions"]] == [p["label"] for p in preds[:4]]


def test_stricter_threshold(http, digits_pixels):
    x, _ = digits_pixels
    r = http.post("/predict", json={"instances": x[:8, 0].tolist(), "threshold": 1.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == 1.0
    assert not any(p["accepted"] for p in body["predictions"])
    assert {p["reason"] for p in body["predictions"]} <= {
        "below_threshold",
        "unoccupied_vertex",
        "disagrees_with_argmax",
    }


def test_predict_image_policy(http, digits_pixels):
    x, labels = digits_pixels
    direct = http.post("/predict", json={"instances": x[:10, 0].tolist()}).json()["predictions"]
    files = [("image", (f"{i}.png", png_bytes(drawn(x[i, 0])), "image/png")) for i in range(10)]
    r = http.post("/predict_image", files=files)
    assert r.status_code == 200, r.text
    got = [p["label"] for p in r.json()["predictions"]]
    assert np.mean(np.array(got) == np.array([p["label"] for p in direct])) >= 0.8
    # a single raw image/png body and a JPEG with a stricter threshold
    one = http.post(
        "/predict_image", content=png_bytes(drawn(x[0, 0])), headers={"content-type": "image/png"}
    )
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1
    jpeg = http.post(
        "/predict_image",
        files=[("image", ("a.jpg", png_bytes(drawn(x[1, 0]), "JPEG"), "image/jpeg"))],
        data={"threshold": "1"},
    )
    assert jpeg.status_code == 200, jpeg.text
    assert jpeg.json()["threshold"] == 1.0 and jpeg.json()["predictions"][0]["accepted"] is False


def test_model_card(http, digits_artifact):
    card = http.get("/model").json()
    art = load_artifact(digits_artifact)
    assert card["classes"] == art.classes and card["threshold"] == pytest.approx(art.threshold)
    assert card["input"]["shape"] == [1, 8, 8] and card["input"]["pixel_range"] == [0, 1]
    assert card["dataset"] == "digits" and card["variant"] == "bin_enc"
    assert card["score"]["name"] == art.score_name and isinstance(card["annex"], dict)
    assert card["request"]["predict_image"]["policy"]["mnist_style"] is True
    assert card["limits"]["max_body_bytes"] == 8 * 1024 * 1024
    assert card["source"] == f"file:{digits_artifact}"


def test_batch_route_with_bentoml_client(served, digits_pixels):
    x, _ = digits_pixels
    with bentoml.SyncHTTPClient(served.url, timeout=30) as client:
        assert client.is_ready()
        preds = client.predict_batch(pixels=x[:3].tolist())
        assert len(preds) == 3 and {"label", "reliability", "accepted", "reason"} <= set(preds[0])
        with pytest.raises(bentoml.exceptions.BentoMLException, match="invalid_shape"):
            client.predict_batch(pixels=x[:3, 0].tolist())

    # concurrent single-image requests are merged by the adaptive batcher and each gets its own answer
    def one(i: int) -> int:
        r = httpx.post(served.url + "/predict_batch", json={"pixels": x[i : i + 1].tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()[0]["label"]

    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(one, range(16)))
    direct = httpx.post(served.url + "/predict", json={"instances": x[:16, 0].tolist()}).json()["predictions"]
    assert labels == [p["label"] for p in direct]


# --------------------------------------------------------------------------- refusals
def _png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, "PNG")  # ~110 KB on the wire, 900 Mpx decoded
    return buf.getvalue()


def _tiff_float() -> bytes:
    buf = io.BytesIO()
    Image.new("F", (8, 8)).save(buf, "TIFF")
    return buf.getvalue()


GOOD = np.full((1, 8, 8), 0.5).tolist()
ROW_1E400 = "[" + ",".join(["1e400"] + ["0"] * 7) + "]"
JSON = {"content-type": "application/json"}
TRUNCATED = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:300]

BAD = [
    # (id, path, request kwargs, status, code)
    ("wrong_rank", "/predict", {"json": {"instances": [[0.5] * 64]}}, 400, "invalid_shape"),
    ("wrong_shape", "/predict", {"json": {"instances": np.zeros((1, 8, 7)).tolist()}}, 400, "invalid_shape"),
    (
        "wrong_layout_nchw",
        "/predict",
        {"json": {"instances": np.zeros((1, 1, 8, 8)).tolist()}},
        400,
        "invalid_shape",
    ),
    (
        "wrong_layout_hwc",
        "/predict",
        {"json": {"instances": np.zeros((1, 8, 8, 1)).tolist()}},
        400,
        "invalid_shape",
    ),
    (
        "wrong_dtype_float_as_0_255",
        "/predict",
        {"json": {"instances": np.full((1, 8, 8), 0.5).tolist(), "pixel_range": "0-255"}},
        400,
        "invalid_dtype",
    ),
    ("wrong_dtype_bool", "/predict", {"json": {"instances": [[[True] * 8] * 8]}}, 400, "invalid_type"),
    ("strings", "/predict", {"json": {"instances": [[["0.5"] * 8] * 8]}}, 400, "invalid_type"),
    ("ragged", "/predict", {"json": {"instances": [[[0.5] * 8] * 8, [[0.5] * 7] * 8]}}, 400, "ragged_array"),
    ("empty_batch", "/predict", {"json": {"instances": []}}, 400, "empty_batch"),
    (
        "batch_above_cap",
        "/predict",
        {"json": {"instances": np.zeros((257, 8, 8), np.uint8).tolist(), "pixel_range": "0-255"}},
        400,
        "batch_too_large",
    ),
    ("nan", "/predict", {"content": b'{"instances": [[[NaN]]]}', "headers": JSON}, 400, "invalid_json"),
    (
        "inf_overflow",
        "/predict",
        {"content": ('{"instances": [[' + ",".join([ROW_1E400] * 8) + "]]}").encode(), "headers": JSON},
        400,
        "non_finite",
    ),
    (
        "out_of_range",
        "/predict",
        {"json": {"instances": np.full((1, 8, 8), 255).tolist()}},
        400,
        "out_of_range",
    ),
    (
        "negative",
        "/predict",
        {"json": {"instances": np.full((1, 8, 8), -1).tolist(), "pixel_range": "0-255"}},
        400,
        "out_of_range",
    ),
    ("invalid_json", "/predict", {"content": b'{"instances": [', "headers": JSON}, 400, "invalid_json"),
    ("missing_field", "/predict", {"json": {"threshold": 0.9}}, 400, "missing_field"),
    ("unknown_field", "/predict", {"json": {"instances": GOOD, "treshold": 0.9}}, 400, "unknown_field"),
    (
        "threshold_below_calibrated",
        "/predict",
        {"json": {"instances": GOOD, "threshold": 0.0}},
        400,
        "invalid_threshold",
    ),
    (
        "threshold_above_one",
        "/predict",
        {"json": {"instances": GOOD, "threshold": 1.5}},
        400,
        "invalid_threshold",
    ),
    (
        "threshold_string",
        "/predict",
        {"json": {"instances": GOOD, "threshold": "high"}},
        400,
        "invalid_threshold",
    ),
    (
        "wrong_content_type",
        "/predict",
        {"content": json.dumps({"instances": GOOD}).encode(), "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("no_content_type", "/predict", {"content": b"{}"}, 415, "unsupported_media_type"),
    (
        "invalid_image_bytes",
        "/predict_image",
        {"files": [("image", ("a.png", b"\x89PNG garbage", "image/png"))]},
        400,
        "invalid_image",
    ),
    (
        "truncated_image",
        "/predict_image",
        {"files": [("image", ("a.png", TRUNCATED, "image/png"))]},
        400,
        "truncated_image",
    ),
    (
        "decompression_bomb",
        "/predict_image",
        {"files": [("image", ("a.png", _png_bomb(), "image/png"))]},
        400,
        "decompression_bomb",
    ),
    (
        "absurd_dimensions",
        "/predict_image",
        {"files": [("image", ("a.png", png_bytes(np.zeros((2, 5000), np.uint8)), "image/png"))]},
        400,
        "invalid_image_dimensions",
    ),
    (
        "unsupported_mode_float_tiff",
        "/predict_image",
        {"files": [("image", ("a.tif", _tiff_float(), "image/tiff"))]},
        415,
        "unsupported_image_format",
    ),
    (
        "url_in_form_field",
        "/predict_image",
        {"files": {"image": (None, "https://example.com/digit.png")}},
        400,
        "url_not_supported",
    ),
    (
        "url_as_json",
        "/predict_image",
        {"json": {"image": "https://example.com/digit.png"}},
        400,
        "url_not_supported",
    ),
    (
        "text_instead_of_file",
        "/predict_image",
        {"files": {"image": (None, "not a file")}},
        400,
        "expected_file",
    ),
    ("missing_image_field", "/predict_image", {"files": {"threshold": (None, "0.9")}}, 400, "missing_field"),
    (
        "image_bad_threshold",
        "/predict_image",
        {
            "files": [("image", ("a.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png"))],
            "data": {"threshold": "2"},
        },
        400,
        "invalid_threshold",
    ),
    (
        "image_wrong_content_type",
        "/predict_image",
        {"content": b"<xml/>", "headers": {"content-type": "application/xml"}},
        415,
        "unsupported_media_type",
    ),
    (
        "multipart_without_boundary",
        "/predict_image",
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "invalid_multipart",
    ),
    (
        "batch_route_shape",
        "/predict_batch",
        {"json": {"pixels": np.zeros((1, 8, 8)).tolist()}},
        400,
        "invalid_shape",
    ),
    ("batch_route_strings", "/predict_batch", {"json": {"pixels": [[[["x"] * 8] * 8]]}}, 400, "invalid_type"),
    (
        "batch_route_bool",
        "/predict_batch",
        {"json": {"pixels": [[[[0.5] * 7 + [True]] * 8]]}},
        400,
        "invalid_type",
    ),
    (
        "batch_route_range",
        "/predict_batch",
        {"json": {"pixels": np.full((1, 1, 8, 8), 3.0).tolist()}},
        400,
        "out_of_range",
    ),
    ("batch_route_missing", "/predict_batch", {"json": {"pixel": GOOD}}, 400, "missing_field"),
    ("batch_route_invalid_json", "/predict_batch", {"content": b"{", "headers": JSON}, 400, "invalid_json"),
    (
        "batch_route_content_type",
        "/predict_batch",
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "body_over_cap",
        "/predict",
        {"content": b" " * (8 * 1024 * 1024 + 1), "headers": JSON},
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "code"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_uniform_4xx(http, path, kwargs, status, code):
    r = http.post(path, **kwargs)
    assert_uniform_error(r, status, code)
    assert http.get("/readyz").status_code == 200


def test_unknown_route_and_method_are_uniform(http):
    assert_uniform_error(http.get("/nope"), 404, "not_found")
    assert_uniform_error(http.get("/predict"), 405, "method_not_allowed")


def test_streamed_body_over_cap_is_cut_off(served):
    """Chunked upload, no Content-Length, never finished: the 413 comes once the cap is passed, not at the end."""
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b" " * (256 * 1024))
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(33):  # 8.25 MiB, just over the 8 MiB cap; the terminating 0-chunk is never sent
            s.sendall(chunk)
        data = b""
        while not data.rstrip().endswith(b"}"):
            got = s.recv(65536)
            if not got:
                break
            data += got
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"


def test_declared_oversize_body_refused_before_reading(served):
    """Content-Length of 100 MiB with only a few bytes sent: the 413 arrives at once, the body is never read."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 104857600\r\n\r\n{"instances": ['
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert elapsed < 5.0


def test_metrics_show_own_counters(http, digits_pixels):
    x, _ = digits_pixels
    http.post("/predict", json={"instances": x[:4, 0].tolist()})
    http.post("/predict", json={"instances": x[:2, 0].tolist(), "threshold": 1.0})  # rejected
    http.post("/predict", json={"instances": []})  # refused
    text = http.get("/metrics").text

    def value(pattern: str) -> float:
        m = re.search(pattern + r"\s+([0-9.e+]+)", text)
        assert m, f"{pattern} not in /metrics"
        return float(m.group(1))

    assert value(r'binenc_predictions_total\{outcome="accepted",route="predict"\}') >= 1
    assert value(r'binenc_predictions_total\{outcome="rejected",route="predict"\}') >= 2
    assert value(r'binenc_rejections_total\{reason="below_threshold",route="predict"\}') >= 1
    assert value(r'binenc_reliability_bucket\{le="1.0",route="predict"\}') >= 6
    assert value(r'binenc_request_errors_total\{code="empty_batch",route="predict"\}') >= 1
    assert "binenc_inference_seconds_bucket" in text
    assert value(r'binenc_http_requests_total\{route="/predict",status="200"\}') >= 2
    assert value(r'binenc_http_requests_total\{route="/predict",status="400"\}') >= 1
    assert "bentoml_service_request_total" not in text  # BentoML's raw-path labels are off


def test_server_still_healthy(http, served, digits_pixels):
    assert served.alive(), served.log_tail()
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    x, _ = digits_pixels
    assert http.post("/predict", json={"instances": x[:1, 0].tolist()}).status_code == 200
    log = served.log_tail(100000)
    assert "status=500" not in log and "unhandled error" not in log, log[-5000:]
