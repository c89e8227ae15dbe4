"""What ``bentoml serve`` does with a broken model file or an unusable setting: it checks both once, before any
worker starts, and ends with one ``binenc: refusing to serve`` line and exit status 2, with or without a public
key (a bad model once kept the port open while the worker restarted every few seconds with a traceback)."""

from __future__ import annotations

import time

import onnx
import pytest
from server_util import start_server

from serving.artifact_format import METADATA_KEY

pytestmark = pytest.mark.slow
EXIT_WITHIN_S = 60  # seconds from launch to exit on 2 busy cores (the import of BentoML is most of it)


def broken_model(kind: str, good: bytes, path) -> str:
    """Write one kind of broken model file at ``path`` (``missing`` writes nothing); returns the expected text."""
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
        return "not a readable ONNX model"
    if kind == "corrupt":
        path.write_bytes(good[:64] + bytes(range(256)) * 4 + good[64 + 1024 :])
        return "not a readable ONNX model"
    if kind == "checksum_mismatch":
        model = onnx.load_model_from_string(good)
        model.graph.node[0].name += "_edited"
        path.write_bytes(model.SerializeToString())
        return "checksum mismatch"
    if kind == "two_metadata_entries":
        model = onnx.load_model_from_string(good)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, "{}"
        path.write_bytes(model.SerializeToString())
        return "more than once"
    return "no artifact at"


def refused_at_start(env: dict[str, str | None]) -> tuple[str, float]:
    """Start the server expecting exit status 2; returns the single refusal line and the seconds it took."""
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"exited with 2") as info:
        start_server({"BINENC_MODEL_TAG": None, **env}, ready_timeout=EXIT_WITHIN_S)
    took = time.perf_counter() - t0
    lines = [line for line in str(info.value).splitlines() if "refusing to serve" in line]
    assert len(lines) == 1, str(info.value)
    assert "Traceback" not in str(info.value), str(info.value)
    return lines[0], took


@pytest.mark.parametrize(
    "kind", ["truncated", "corrupt", "missing", "checksum_mismatch", "two_metadata_entries"]
)
def test_broken_model_file_ends_the_server(kind, digits_artifact, tmp_path):
    path = tmp_path / "model.onnx"
    expected = broken_model(kind, digits_artifact.read_bytes(), path)
    line, took = refused_at_start({"BINENC_MODEL_PATH": str(path)})
    assert expected in line and took < EXIT_WITHIN_S, (line, took)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BINENC_API_KEY_HASHES": ","}, "no API key hash found"),
        ({"BINENC_API_KEYS_FILE": "EMPTY"}, "no API key hash found"),
        ({"BINENC_TIMEOUT_S": "nan"}, "BINENC_TIMEOUT_S must be a positive float"),
    ],
    ids=["hashes-comma", "empty-keys-file", "timeout-nan"],
)
def test_unusable_setting_ends_the_server(env, expected, digits_artifact, tmp_path):
    if env.get("BINENC_API_KEYS_FILE") == "EMPTY":
        (tmp_path / "keys.txt").write_text("# sha256 digests of the API keys, one per line\n\n")
        env = {"BINENC_API_KEYS_FILE": str(tmp_path / "keys.txt")}
    line, _ = refused_at_start({"BINENC_MODEL_PATH": str(digits_artifact), **env})
    assert expected in line, line
