"""Signed models: key pairs, signatures over the checksum, and a service that refuses what its key did not sign."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import onnx
import pytest
from server_util import REPO_ROOT, start_server

from serving.artifact import load_artifact
from serving.artifact_format import (
    METADATA_KEY,
    SIGNATURE_KEY,
    ArtifactError,
    get_props,
    sign_metadata,
    write_annex,
)
from serving.signing import SignatureError, load_public_key, verify_artifact, verify_file
from training.signing import generate_keypair


def _tamper_threshold(path, value: float = 0.0) -> None:
    """Edit the signed threshold and recompute the checksum, as someone without the private key could."""
    model = onnx.load(str(path))
    md = json.loads(get_props(model)[METADATA_KEY])
    md["threshold"] = value
    sign_metadata(model, {k: v for k, v in md.items() if k != "checksum"})
    onnx.save(model, str(path))


def _strip_signature(path) -> None:
    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != SIGNATURE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(path))


@pytest.fixture
def signed_copy(tmp_path, signed_artifact):
    path = tmp_path / "model.onnx"
    shutil.copyfile(signed_artifact, path)
    return path


def test_signature_verifies_and_survives_annex_updates(signed_copy, signing_keys):
    assert verify_file(signed_copy, signing_keys[1])["checksum"].startswith("sha256:")
    write_annex(signed_copy, {"robustness": {"auroc": 0.9}})  # unsigned part: the signature still holds
    verify_artifact(load_artifact(signed_copy), load_public_key(signing_keys[1]))


def test_unsigned_tampered_and_foreign_models_are_refused(signed_copy, tmp_path, signing_keys):
    unsigned = tmp_path / "unsigned.onnx"
    shutil.copyfile(signed_copy, unsigned)
    _strip_signature(unsigned)
    with pytest.raises(SignatureError, match="is unsigned"):
        verify_file(unsigned, signing_keys[1])
    _, other_public = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="signed by another key"):
        verify_file(signed_copy, other_public)
    _tamper_threshold(signed_copy)
    load_artifact(signed_copy)  # the checksum alone cannot tell: it was recomputed
    with pytest.raises(SignatureError, match="does not match"):
        verify_file(signed_copy, signing_keys[1])


def test_corruption_is_still_caught_by_the_checksum(signed_copy, signing_keys):
    model = onnx.load(str(signed_copy))
    model.graph.node[0].name += "_edited"
    onnx.save(model, str(signed_copy))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify_file(signed_copy, signing_keys[1])


def test_signing_commands(tmp_path, digits_artifact):
    run, verify = [sys.executable, "-m", "training.signing"], [sys.executable, "-m", "serving.signing"]
    model = tmp_path / "model.onnx"
    shutil.copyfile(digits_artifact, model)
    assert subprocess.run([*run, "keygen", "--out", str(tmp_path / "k")], cwd=REPO_ROOT).returncode == 0
    assert (
        tmp_path / "k" / "binenc_ed25519.key"
    ).stat().st_mode & 0o077 == 0  # private key not group/world readable
    again = subprocess.run(
        [*run, "keygen", "--out", str(tmp_path / "k")], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    pub = str(tmp_path / "k" / "binenc_ed25519.pub")
    unsigned = subprocess.run(
        [*verify, "verify", str(model), "--public-key", pub], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert unsigned.returncode == 2 and "unsigned" in unsigned.stderr
    key = str(tmp_path / "k" / "binenc_ed25519.key")
    assert subprocess.run([*run, "sign", str(model), "--key", key], cwd=REPO_ROOT).returncode == 0
    assert subprocess.run([*verify, "verify", str(model), "--public-key", pub], cwd=REPO_ROOT).returncode == 0


@pytest.mark.slow
def test_export_signs(tmp_path, digits_run, digits_data, signing_keys):
    from training.export import export_run

    out = export_run(digits_run, tmp_path / "model.onnx", data=digits_data, sign_key=signing_keys[0])
    verify_file(out, signing_keys[1])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unsigned", "tampered", "other_key"])
def test_service_refuses_at_start(case, signed_copy, tmp_path, signing_keys):
    public = signing_keys[1]
    if case == "unsigned":
        _strip_signature(signed_copy)
        expected = "is unsigned"
    elif case == "tampered":
        _tamper_threshold(signed_copy)
        expected = "does not match"
    else:
        public = generate_keypair(tmp_path / "other")[1]
        expected = "signed by another key"
    with pytest.raises(RuntimeError, match=r"exited with 2") as info:
        start_server(
            {
                "BINENC_MODEL_PATH": str(signed_copy),
                "BINENC_MODEL_TAG": None,
                "BINENC_PUBLIC_KEY": str(public),
            },
            ready_timeout=120,
        )
    lines = [line for line in str(info.value).splitlines() if "refusing to serve" in line]
    assert len(lines) == 1 and expected in lines[0], str(info.value)


@pytest.mark.slow
def test_service_accepts_the_signed_model(hardened):
    import httpx

    assert httpx.get(hardened.url + "/readyz", timeout=10).status_code == 200
