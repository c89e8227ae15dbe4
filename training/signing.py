"""Ed25519 key pairs and artifact signatures: the signing side, which stays with training (serving ships only the
verifier, :mod:`serving.signing`, which also defines the signature's format).

The signature covers the artifact's ``checksum`` (:func:`serving.artifact_format.compute_checksum`) and is stored in
``metadata_props["binenc.signature"]`` as JSON ``{"algorithm": "ed25519", "key_id": ..., "signature": base64}``.

Commands::

    python -m training.signing keygen --out DIR          # DIR/binenc_ed25519.key (private, 0600) + .pub
    python -m training.signing sign MODEL --key DIR/binenc_ed25519.key
    python -m serving.signing verify MODEL --public-key DIR/binenc_ed25519.pub

``python -m training.export RUN --sign KEY`` signs while exporting; a service with ``BINENC_PUBLIC_KEY`` set
refuses any model this key did not sign.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from serving.artifact_format import (
    METADATA_KEY,
    SIGNATURE_KEY,
    ArtifactError,
    get_props,
    read_metadata,
    set_prop,
)
from serving.atomic_write import atomic_write_bytes
from serving.signing import ALGORITHM, CONTEXT, KeyFileError, key_id, read_pem

KEY_NAME = "binenc_ed25519"


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(read_pem(path, "private"), password=None)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an Ed25519 private key")
    return key


def generate_keypair(out_dir: str | Path, name: str = KEY_NAME) -> tuple[Path, Path]:
    """Write ``name.key`` (PKCS#8 PEM, mode 0600) and ``name.pub`` (SubjectPublicKeyInfo PEM) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if private.exists():
        raise FileExistsError(f"{private} exists; refusing to overwrite a private key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _checksum_of(model: onnx.ModelProto) -> str:
    props = get_props(model)
    try:
        return str(json.loads(props[METADATA_KEY])["checksum"])
    except (KeyError, ValueError, TypeError):
        raise ArtifactError(
            "the model has no signed binenc metadata with a checksum; export it first"
        ) from None


def sign_model(model: onnx.ModelProto, private_key: str | Path | Ed25519PrivateKey) -> str:
    """Add the signature of ``model``'s checksum to its ``metadata_props``; returns the key id."""
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    signature = key.sign(CONTEXT + _checksum_of(model).encode())
    kid = key_id(key.public_key())
    set_prop(
        model,
        SIGNATURE_KEY,
        json.dumps(
            {"algorithm": ALGORITHM, "key_id": kid, "signature": base64.b64encode(signature).decode()}
        ),
    )
    return kid


def sign_file(path: str | Path, private_key: str | Path) -> str:
    """Verify ``path`` (schema, checksum), sign it and rewrite it atomically; returns the key id."""
    read_metadata(path, verify=True)
    model = onnx.load_model(str(path))
    kid = sign_model(model, private_key)
    atomic_write_bytes(path, model.SerializeToString())
    return kid


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.signing",
        allow_abbrev=False,
        description="Ed25519 key pairs and artifact signatures (verify: python -m serving.signing)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write a new key pair", allow_abbrev=False)
    k.add_argument("--out", required=True, help=f"directory for {KEY_NAME}.key / .pub")
    s = sub.add_parser("sign", help="sign an exported model.onnx in place", allow_abbrev=False)
    s.add_argument("model")
    s.add_argument("--key", required=True, help="private key (PEM)")
    args = p.parse_args(argv)
    try:
        if args.command == "keygen":
            private, public = generate_keypair(args.out)
            print(f"private key {private} (keep it secret), public key {public}")
        else:
            print(f"signed {args.model} with key id {sign_file(args.model, args.key)}")
    except (ArtifactError, KeyFileError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
