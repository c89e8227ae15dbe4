"""Ed25519 signatures on artifacts, the verifying side: who exported a model, on top of the checksum that catches
corruption. Keys are made and models signed on the training side (:mod:`training.signing`); serving ships only this.

The signature covers the artifact's ``checksum`` (sha256 over the serialised graph and every other signed
metadata field, :func:`serving.artifact_format.compute_checksum`); the loader recomputes the checksum from the file
before the signature is verified, so editing the graph, the threshold or any signed field breaks one or the
other. It is stored in ``metadata_props["binenc.signature"]`` as JSON ``{"algorithm": "ed25519",
"key_id": ..., "signature": base64}``; the unsigned annex can still be updated without re-signing.

Command (keys and signatures: ``python -m training.signing keygen / sign``)::

    python -m serving.signing verify MODEL --public-key DIR/binenc_ed25519.pub

A service with ``BINENC_PUBLIC_KEY`` set refuses any model the matching private key did not sign.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .artifact import Artifact
from .artifact_format import SIGNATURE_KEY, ArtifactError, get_props, read_metadata

ALGORITHM = "ed25519"
CONTEXT = b"binenc-artifact-signature-v1\n"  # signed message = CONTEXT + checksum (training.signing signs it)


class SignatureError(ArtifactError):
    """The artifact is unsigned, its signature does not verify, or another key signed it."""


class KeyFileError(ValueError):
    """A key file is missing or is not an Ed25519 key in PEM form."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key (names the key in errors and logs)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_pem(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise KeyFileError(f"cannot read the {what} key {path}: {err.strerror}") from None


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(read_pem(path, "public"))
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{path} is not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an Ed25519 public key")
    return key


def verify_signature(
    checksum: str, signature_json: str | None, public_key: Ed25519PublicKey, where: str = "the model"
) -> None:
    """Raise :class:`SignatureError` unless ``signature_json`` is ``public_key``'s signature of ``checksum``."""
    expected = key_id(public_key)
    if not signature_json:
        raise SignatureError(
            f"{where} is unsigned; a public key is configured (key id {expected}), so only "
            "models signed with its private key are served (`python -m training.export RUN "
            "--sign KEY` or `python -m training.signing sign MODEL --key KEY`)"
        )
    try:
        record = json.loads(signature_json)
        signature = base64.b64decode(record["signature"], validate=True)
        algorithm, kid = record["algorithm"], record.get("key_id")
    except (ValueError, KeyError, TypeError):
        raise SignatureError(f"{where}: the signature record is malformed; re-sign the model") from None
    if algorithm != ALGORITHM:
        raise SignatureError(f"{where}: signature algorithm {algorithm!r} is not {ALGORITHM!r}")
    if kid != expected:
        raise SignatureError(
            f"{where} is signed by another key (key id {kid}), not by the configured public "
            f"key (key id {expected})"
        )
    try:
        public_key.verify(signature, CONTEXT + checksum.encode())
    except InvalidSignature:
        raise SignatureError(
            f"{where}: the signature does not match the model's graph and metadata (key id "
            f"{expected}); the artifact was modified after it was signed"
        ) from None


def verify_artifact(artifact: Artifact, public_key: Ed25519PublicKey) -> None:
    """Verify an opened artifact (its checksum was already recomputed from the file by the loader)."""
    verify_signature(artifact.metadata["checksum"], artifact.signature, public_key, str(artifact.path))


def verify_file(path: str | Path, public_key: str | Path | Ed25519PublicKey) -> dict:
    """Checksum and signature of ``path`` without starting a session; returns the metadata."""
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    metadata, _ = read_metadata(path, verify=True)
    model = onnx.load_model(str(path), load_external_data=False)
    verify_signature(metadata["checksum"], get_props(model).get(SIGNATURE_KEY), key, str(path))
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serving.signing",
        allow_abbrev=False,
        description="check an artifact's signature (keys and signing: python -m training.signing)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a model's checksum and signature", allow_abbrev=False)
    v.add_argument("model")
    v.add_argument("--public-key", required=True, help="public key (PEM)")
    args = p.parse_args(argv)
    try:
        verify_file(args.model, args.public_key)
    except (ArtifactError, KeyFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model}: signature valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
