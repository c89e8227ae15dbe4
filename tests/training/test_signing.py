"""Key pairs and signatures on the training side; the service keeps only the verifier (serving.signing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import serving.signing
from serving.artifact_format import METADATA_KEY, SIGNATURE_KEY, get_props, set_prop
from serving.signing import verify_signature
from training.signing import generate_keypair, sign_model

REPO = Path(__file__).resolve().parents[2]
CHECKSUM = "sha256:" + "ab" * 32
# The record serving.signing.sign_model wrote for this key and checksum before signing moved to training: the
# format (context string, algorithm, key id, base64) is unchanged, so models signed before still verify.
RECORD = {
    "algorithm": "ed25519",
    "key_id": "56475aa75463474c",
    "signature": "nUYlfb4OiOXMsT2B/qivilrK4rJVd/DgNikOzuUt6K5ddJxzlgVD3IzODMoQSE+7pSTOwoi3rWtJp6QZiQi+DQ==",
}


def _model_with_checksum() -> onnx.ModelProto:
    model = onnx.ModelProto()
    set_prop(model, METADATA_KEY, json.dumps({"checksum": CHECKSUM}))
    return model


def test_signature_format_is_unchanged_and_verifies():
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # Ed25519 signatures are deterministic
    model = _model_with_checksum()
    assert sign_model(model, key) == RECORD["key_id"]
    record = get_props(model)[SIGNATURE_KEY]
    assert json.loads(record) == RECORD
    verify_signature(CHECKSUM, record, key.public_key())


def test_serving_ships_only_the_verifier(tmp_path):
    assert not any(
        hasattr(serving.signing, name)
        for name in ("generate_keypair", "sign_model", "sign_file", "load_private_key", "Ed25519PrivateKey")
    )
    done = subprocess.run(
        [sys.executable, "-m", "serving.signing", "keygen", "--out", str(tmp_path / "k")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "invalid choice: 'keygen'" in done.stderr
    assert not (tmp_path / "k").exists()


def test_sign_command_user_errors_are_one_line(tmp_path):
    private, _ = generate_keypair(tmp_path / "k")
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.signing",
            "sign",
            str(tmp_path / "none.onnx"),
            "--key",
            str(private),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert (
        missing.stderr.startswith("error: no artifact at") and len(missing.stderr.strip().splitlines()) == 1
    )
    bad = subprocess.run(
        [sys.executable, "-m", "training.signing", "keygen", "--out", str(tmp_path / "k")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "refusing to overwrite a private key" in bad.stderr
