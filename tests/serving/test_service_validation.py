"""Depth 0: request validation and image decoding as plain functions (no model, no server)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.errors import ApiError
from serving.images import DecodeCancelled, ImagePolicy, _to_mode, check_images, decode_image, decode_images
from serving.json_body import parse_json
from serving.middleware import hash_key, route_template
from serving.responses import QuietRefusals, rewrite
from serving.settings import ENV, Settings, SettingsError
from serving.validation import InputSpec, Limits, parse_predict, validate_model_tensor, validate_threshold

GRAY = InputSpec(1, 8, 8)
RGB = InputSpec(3, 4, 4)
LIMITS = Limits(max_body_bytes=1 << 20, max_batch=4, max_json_depth=8)


def parse(body, spec=GRAY, threshold=0.5):
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return parse_predict(parse_json(raw, LIMITS.max_json_depth), spec, LIMITS, threshold, raw=raw)


def refused(code: str, match: str | None = None):
    """Context manager: an ApiError with this code (and a message matching ``match``)."""

    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(ApiError, match=match)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self.cm.__exit__(*exc)
            assert self.info.value.code == code, (self.info.value.code, self.info.value.message)
            assert 400 <= self.info.value.status < 500
            return result

    return _Ctx()


def test_grayscale_floats_and_bytes_agree():
    a = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8))
    r1 = parse({"instances": a.tolist(), "pixel_range": "0-255"})
    r2 = parse({"instances": (a / 255.0).tolist()})
    assert r1.pixels.shape == (2, 1, 8, 8) and r1.pixels.dtype == np.float32
    np.testing.assert_allclose(r1.pixels, r2.pixels, atol=1e-6)
    assert r1.threshold is None


def test_colour_takes_channels_first():
    x = np.zeros((1, 3, 4, 4)).tolist()
    assert parse({"instances": x}, RGB).pixels.shape == (1, 3, 4, 4)
    with refused("invalid_shape", "channels-last"):
        parse({"instances": np.zeros((1, 4, 4, 3)).tolist()}, RGB)


@pytest.mark.parametrize(
    ("body", "code", "match"),
    [
        ({"instances": np.zeros((1, 1, 8, 8)).tolist()}, "invalid_shape", "no channel axis"),
        ({"instances": np.zeros((1, 64)).tolist()}, "invalid_shape", r"expected N×8×8, got 1×64"),
        ({"instances": np.zeros((1, 8, 7)).tolist()}, "invalid_shape", "got 1×8×7"),
        ({"instances": [[[0.5] * 8] * 8, [[0.5] * 8] * 7]}, "ragged_array", "not rectangular"),
        ({"instances": [[["a"] * 8] * 8]}, "invalid_type", r"expected a number, got string"),
        ({"instances": [[[True] + [0.0] * 7] * 8]}, "invalid_type", "got boolean"),
        ({"instances": [[[None] * 8] * 8]}, "invalid_type", "got null"),
        ({"instances": []}, "empty_batch", "empty"),
        ({"instances": np.zeros((5, 8, 8)).tolist()}, "batch_too_large", "cap of 4"),
        ({"instances": np.full((1, 8, 8), 2.0).tolist()}, "out_of_range", "pixel_range.*0-255"),
        ({"instances": np.full((1, 8, 8), -0.1).tolist()}, "out_of_range", "outside"),
        ({"instances": np.full((1, 8, 8), 300).tolist(), "pixel_range": "0-255"}, "out_of_range", "255"),
        (
            {"instances": np.full((1, 8, 8), 1.5).tolist(), "pixel_range": "0-255"},
            "invalid_dtype",
            "whole number",
        ),
        ({"instances": np.zeros((1, 8, 8)).tolist(), "pixel_range": "0-65535"}, "invalid_pixel_range", "0-1"),
        ({"instances": np.zeros((1, 8, 8)).tolist(), "treshold": 0.9}, "unknown_field", "treshold"),
        ({"threshold": 0.9}, "missing_field", "instances"),
        ({"instances": "http://example.com/x.png"}, "invalid_type", "got string"),
        ([1, 2], "invalid_type", "JSON object"),
    ],
)
def test_predict_body_refusals(body, code, match):
    with refused(code, match):
        parse(body)


def test_overflowing_number_is_non_finite():
    row = "[" + ",".join(["1e400"] + ["0"] * 7) + "]"
    raw = ('{"instances": [[' + ",".join([row] * 8) + "]]}").encode()
    with refused("non_finite", "not finite"):
        parse(raw)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b'{"instances": [[[NaN]]]}', "NaN"),
        (b'{"instances": [[[Infinity]]]}', "Infinity"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100 + b"]" * 100, "nesting"),
    ],
)
def test_bad_json(raw, match):
    with refused("invalid_json", match):
        parse_json(raw, LIMITS.max_json_depth)


def test_nesting_scan_is_linear_on_escaped_quotes():
    """More than max_depth brackets then an unterminated string of escaped quotes: once super-quadratic (a
    regex), now one pass. 1 MB must be refused well within a second (it took minutes)."""
    for n in (20_000, 500_000):
        raw = b'{"pixels":' + b"[" * 17 + b'"' + b'\\"' * n
        t0 = time.perf_counter()
        with refused("invalid_json", "nesting deeper than 16"):
            parse_json(raw, 16)
        assert time.perf_counter() - t0 < 0.5, (n, time.perf_counter() - t0)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (b'{"a": "[[[[[[[[[[", "b": [[1]]}', True),  # brackets inside strings do not count
        (b'{"a": "\\"[[[[[[[[[", "b": 1}', True),  # an escaped quote does not end the string
        (b'{"a": "\\\\", "b": [[[[[[[[[1]]]]]]]]]}', False),  # an escaped backslash does not escape the quote
        (b"[" * 8 + b"]" * 8, True),
        (b"[" * 9 + b"]" * 9, False),
    ],
)
def test_nesting_scan_reads_strings_like_json(raw, ok):
    if ok:
        parse_json(raw, 8)
    else:
        with refused("invalid_json", "nesting"):
            parse_json(raw, 8)


def test_threshold_bounds():
    assert validate_threshold(None, 0.5) is None
    assert validate_threshold(0.5, 0.5) == 0.5
    assert validate_threshold(1, 0.5) == 1.0
    for bad, match in [
        (0.49, r"outside \[0.5, 1\]"),
        (1.01, "outside"),
        ("0.9", "got string"),
        (True, "boolean"),
        (float("nan"), "finite"),
    ]:
        with refused("invalid_threshold", match):
            validate_threshold(bad, 0.5)


def test_model_tensor_contract():
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(validate_model_tensor(x, GRAY, LIMITS), x)
    with refused("invalid_shape"):
        validate_model_tensor(x[:, 0], GRAY, LIMITS)
    with refused("out_of_range", r"\[0, 1\]$"):  # no 0-255 hint on the model-layout routes
        validate_model_tensor(x * 255, GRAY, LIMITS)
    with refused("non_finite"):
        validate_model_tensor(np.full((1, 1, 8, 8), np.nan, np.float32), GRAY, LIMITS)


def test_settings_from_env(tmp_path):
    assert Settings.from_env({}).limits == Limits()
    s = Settings.from_env(
        {
            "BINENC_MAX_BODY_BYTES": "1024",
            "BINENC_TIMEOUT_S": "2.5",
            "BINENC_ACCESS_LOG": "0",
            "BINENC_AUTH_OPEN_PATHS": "/livez",
            "BINENC_MODEL_PATH": "",
        }
    )
    assert s.limits.max_body_bytes == 1024 and s.timeout_s == 2.5 and s.access_log is False
    assert s.auth_open_paths == ("/livez",) and s.model_path is None and not s.auth_enabled
    assert Settings.from_env({"BINENC_AUTH_OPEN_PATHS": "none"}).auth_open_paths == ()
    with pytest.raises(SettingsError, match="positive int"):
        Settings.from_env({"BINENC_MAX_BATCH": "0"})
    with pytest.raises(SettingsError, match="0 or 1"):
        Settings.from_env({"BINENC_TRACE_PREDICT": "yes"})
    keys = tmp_path / "keys"
    keys.write_text(f"# api keys\n{hash_key('a')}\n\n{hash_key('b').upper()}  # second\n")
    s = Settings.from_env({"BINENC_API_KEYS_FILE": str(keys), "BINENC_API_KEY_HASHES": hash_key("c")})
    assert s.api_key_hashes == {hash_key("a"), hash_key("b"), hash_key("c")} and s.auth_enabled
    with pytest.raises(SettingsError, match="sha256 hex"):  # a raw key instead of its hash is refused
        Settings.from_env({"BINENC_API_KEY_HASHES": "my-secret-key"})


@pytest.mark.parametrize(
    "env",
    [
        {"BINENC_API_KEY_HASHES": ","},
        {"BINENC_API_KEY_HASHES": " , "},
        {"BINENC_API_KEYS_FILE": "EMPTY"},
        {"BINENC_API_KEYS_FILE": "COMMENTS"},
    ],
)
def test_asking_for_keys_and_getting_none_is_an_error(env, tmp_path):
    files = {"EMPTY": "", "COMMENTS": "# keys go here\n\n   # none yet\n"}
    for var, value in env.items():
        if value in files:
            (tmp_path / value).write_text(files[value])
            env[var] = str(tmp_path / value)
    with pytest.raises(SettingsError, match="no API key hash found; authentication would be off"):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_settings_are_refused(value):
    with pytest.raises(SettingsError, match="BINENC_TIMEOUT_S must be a positive float"):
        Settings.from_env({"BINENC_TIMEOUT_S": value})


def test_model_card_geometry_setting():
    assert not Settings.from_env({}).card_geometry
    assert Settings.from_env({"BINENC_MODEL_CARD_GEOMETRY": "1"}).card_geometry
    keyed = {"BINENC_API_KEY_HASHES": hash_key("a")}
    assert Settings.from_env(keyed).card_geometry  # only key holders reach /model
    assert not Settings.from_env({**keyed, "BINENC_AUTH_OPEN_PATHS": "/livez,/model"}).card_geometry


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/predict", "/predict"),
        ("/v2/models/binenc/infer", "/v2/models/{name}/infer"),
        ("/v2/models/x/versions/abc/ready", "/v2/models/{name}/versions/{version}/ready"),
        ("/v2/models/anything", "/v2/models/{name}"),
        ("/v2/models/a/b/c", "other"),
        ("/v2/models/", "other"),
        ("/" + "x" * 1000, "other"),
        ("/predict/extra", "other"),
        ("/v2/models/a/versions/", "other"),
    ],
)
def test_route_templates_are_a_fixed_set(path, template):
    assert route_template(path) == template


def test_overloaded_batcher_is_named():
    code, message = rewrite(
        503, b'{"error": "An unexpected error has occurred, please check the server log."}'
    )
    assert code == "overloaded" and "queue is full" in message and "unexpected" not in message


def test_quiet_refusals_filter():
    filt = QuietRefusals(ValueError)

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on /predict_batch", (), info)

    assert not filt.filter(record(ValueError("client input")))
    assert filt.filter(record(RuntimeError("a real fault"))) and filt.filter(record(None))


def test_settings_table_in_docs_matches_dataclass():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    table = doc.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(BINENC_[A-Z_]+)`", table))
    assert documented == set(ENV.values())


# --------------------------------------------------------------------------- images
def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def blob(size=(60, 60), box=(20, 10, 40, 50), fg=255, bg=0) -> Image.Image:
    a = np.full(size[::-1], bg, np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = fg
    return Image.fromarray(a)


MNIST = ImagePolicy.for_model(1, 28, 28, "mnist")
FMNIST = ImagePolicy.for_model(1, 28, 28, "fashion-mnist")


def test_polarity_inverts_dark_on_light():
    white_on_black = decode_image(encode(blob()), FMNIST)
    black_on_white = decode_image(encode(blob(fg=0, bg=255)), FMNIST)
    assert white_on_black.shape == (1, 28, 28) and white_on_black.dtype == np.float32
    np.testing.assert_allclose(white_on_black, black_on_white, atol=1e-6)
    assert white_on_black[0, 0, 0] == 0.0 and white_on_black.max() == 1.0


def test_fit_and_centre():
    # Fashion-MNIST: longer side fills 28 px; MNIST: 20 px box, centre of mass at the centre.
    f = decode_image(encode(blob(box=(5, 5, 15, 45))), FMNIST)[0]
    rows = np.flatnonzero(f.max(axis=1) > 0.5)
    assert rows[0] == 0 and rows[-1] == 27
    m = decode_image(encode(blob(box=(0, 0, 10, 40))), MNIST)[0]
    rows = np.flatnonzero(m.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 == 20
    ys, xs = np.indices(m.shape)
    assert abs((ys * m).sum() / m.sum() - 13.5) <= 1.0 and abs((xs * m).sum() / m.sum() - 13.5) <= 1.0


def test_dataset_image_round_trip_is_near_identity():
    a = np.zeros((28, 28), np.uint8)
    a[:, 6:22] = np.linspace(60, 255, 16, dtype=np.uint8)[None, :]  # Fashion-MNIST: longer side spans 28 px
    got = decode_image(encode(Image.fromarray(a)), FMNIST)[0]
    np.testing.assert_allclose(got, a / 255.0, atol=1e-6)


def test_alpha_composited_over_white_then_inverted():
    rgba = np.zeros((40, 40, 4), np.uint8)  # transparent background
    rgba[10:30, 15:25] = (0, 0, 0, 255)  # opaque black stroke
    out = decode_image(encode(Image.fromarray(rgba)), FMNIST)[0]
    assert out.max() == 1.0 and out[0, 0] == 0.0


def test_non_mnist_policy_resizes_whole_image():
    policy = ImagePolicy.for_model(3, 4, 4, "cifar10")
    out = decode_image(encode(Image.new("RGB", (16, 8), (255, 0, 0)), "JPEG"), policy)
    assert out.shape == (3, 4, 4)
    assert out[0].mean() > 0.9 and out[1].mean() < 0.1


def test_image_refusals():
    with refused("truncated_image", "truncated"):
        data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
        decode_image(data[: len(data) // 2], FMNIST)
    with refused("invalid_image", "not a recognisable image"):
        decode_image(b"not an image at all", FMNIST)
    with refused("invalid_image", "empty"):
        decode_image(b"", FMNIST)
    with refused("decompression_bomb", "decompression bomb"):
        decode_image(encode(Image.new("1", (20000, 20000))), FMNIST)
    with refused("invalid_image_dimensions", "aspect"):
        decode_image(encode(Image.new("L", (4000, 2))), FMNIST)
    with pytest.raises(ApiError, match="TIFF is not accepted") as info:
        decode_image(encode(Image.new("F", (8, 8)), "TIFF"), FMNIST)
    assert info.value.status == 415
    with pytest.raises(ApiError, match="mode 'F' is not supported") as info:
        _to_mode(Image.new("F", (8, 8)), 1)
    assert info.value.status == 415


def jpeg_declaring(side: int) -> bytes:
    """A 28×28 JPEG whose frame header (SOF0) is edited to declare side×side: the data ends early."""
    data = bytearray(
        encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), np.uint8)), "JPEG")
    )
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def test_jpeg_ending_early_is_refused_before_decoding():
    with refused("truncated_image", "cannot hold them"):
        decode_image(jpeg_declaring(4096), FMNIST)
    with refused("truncated_image", "cannot hold them"):
        decode_image(jpeg_declaring(2048), FMNIST)


def test_mpo_is_read_as_its_first_jpeg():
    first, second = Image.new("L", (28, 28), 0), Image.new("L", (28, 28), 255)
    first.paste(255, (8, 8, 20, 20))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    out = decode_image(buf.getvalue(), FMNIST)
    ref = decode_image(encode(first, "JPEG"), FMNIST)
    assert out.shape == (1, 28, 28) and np.abs(out - ref).max() < 0.05


def test_big_jpeg_is_decoded_at_a_reduced_scale():
    big = Image.new("L", (4096, 4096), 0)
    big.paste(255, (1024, 1024, 3072, 3072))
    data = encode(big, "JPEG")
    t0 = time.perf_counter()
    out = decode_image(data, FMNIST)
    assert time.perf_counter() - t0 < 1.0 and out.shape == (1, 28, 28) and out.max() > 0.9


def test_request_pixel_budget_and_cancel():
    policy = ImagePolicy.for_model(1, 28, 28, "fashion-mnist", max_request_pixels=3 * 64 * 64)
    img = encode(Image.new("L", (64, 64), 255))
    check_images([img] * 3, policy)
    assert len(decode_images([img] * 3, policy)) == 3
    with refused("too_many_pixels", "declare 16384 pixels together"):
        check_images([img] * 4, policy)
    with refused("truncated_image", r"image\[1\]: "):
        check_images([img, jpeg_declaring(4096)], policy)
    with refused("invalid_image", r"image\[1\]: "):
        decode_images([img, b"junk"], policy)
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(DecodeCancelled):
        decode_images([img], policy, cancelled)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK"])
def test_every_png_jpeg_mode_converts(mode):
    img = Image.new(mode, (32, 32))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(encode(img, fmt), FMNIST)
    assert out.shape == (1, 28, 28) and np.isfinite(out).all()
