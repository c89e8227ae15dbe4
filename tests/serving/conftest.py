"""Serving fixtures: ONE real ``bentoml serve`` per test session (startup is slow on 2 cores).

``served`` runs ``python -m bentoml serve`` from the repo root (bentofile.yaml → serving.service) with
``BINENC_MODEL_PATH`` pointing at the session's ``digits_artifact`` and the session's temporary
``BENTOML_HOME`` (set by tests/conftest.py). ``hardened`` is a second server with authentication, a
signature check, a short body deadline and small batches.
"""

from __future__ import annotations

import httpx
import pytest
from server_util import Server, start_server


@pytest.fixture(scope="session")
def served(digits_artifact) -> Server:
    server = start_server({"BINENC_MODEL_PATH": str(digits_artifact), "BINENC_MODEL_TAG": None})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http(served) -> httpx.Client:
    with httpx.Client(base_url=served.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def digits_pixels(digits_data):
    """A few digits test images as float32 (N, 1, 8, 8) in [0, 1] and their labels."""
    import numpy as np

    images = digits_data.test.images[:32].astype(np.float32) / 255.0
    return images, digits_data.test.labels[:32]


API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory):
    """An Ed25519 key pair (private, public) in a temporary directory."""
    from training.signing import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signed_artifact(tmp_path_factory, digits_artifact, signing_keys):
    """A copy of ``digits_artifact`` signed with ``signing_keys``."""
    import shutil

    from training.signing import sign_file

    path = tmp_path_factory.mktemp("signed") / "model.onnx"
    shutil.copyfile(digits_artifact, path)
    sign_file(path, signing_keys[0])
    return path


@pytest.fixture(scope="session")
def hardened(signed_artifact, signing_keys, tmp_path_factory) -> Server:
    """A server with every protection on: API keys (hashed, from a file), a public key (signed model), a 3 s
    body deadline, and 4 instances per request (keeps the OpenAPI schemas small for the fuzzer)."""
    from serving.middleware import hash_key

    keys = tmp_path_factory.mktemp("apikeys") / "keys.txt"
    keys.write_text(f"# sha256 of the API keys\n{hash_key(API_KEY)}\n")
    server = start_server(
        {
            "BINENC_MODEL_PATH": str(signed_artifact),
            "BINENC_MODEL_TAG": None,
            "BINENC_PUBLIC_KEY": str(signing_keys[1]),
            "BINENC_API_KEYS_FILE": str(keys),
            "BINENC_BODY_TIMEOUT_S": "3",
            "BINENC_MAX_BATCH": "4",
        }
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shipped_with_annex(tmp_path_factory):
    """A copy of the shipped Fashion-MNIST model carrying the robustness annex the bench computes for it (from
    docs/shipped-model-bench/results.json, a bench of the shipped artifact, through the bench's own
    ``annex_summary``)."""
    import json
    import shutil
    from pathlib import Path

    from robustness.bench import annex_summary
    from serving.artifact_format import write_annex

    root = Path(__file__).resolve().parents[2]
    results = json.loads((root / "docs" / "shipped-model-bench" / "results.json").read_text())
    path = tmp_path_factory.mktemp("shipped") / "model.onnx"
    shutil.copyfile(root / "models" / "fashion-mnist_bin_enc" / "model.onnx", path)
    write_annex(path, {"robustness": annex_summary(results["models"]["bin_enc_s1"], results)})
    return path


@pytest.fixture(scope="session")
def shipped(shipped_with_annex) -> Server:
    """The shipped model (with its bench annex) behind an API key (``API_KEY``), JSON logs on: the client, /ui and
    deployment tests' server."""
    from serving.middleware import hash_key

    server = start_server(
        {
            "BINENC_MODEL_PATH": str(shipped_with_annex),
            "BINENC_MODEL_TAG": None,
            "BINENC_API_KEY_HASHES": hash_key(API_KEY),
            "BINENC_API_KEY": None,
            "BINENC_JSON_LOGS": "1",
        }
    )
    yield server
    server.stop()
