"""What an export writes: the artifact's metadata (:mod:`serving.artifact_format`'s schema), its signed, verified
and atomic write, and its registration in the BentoML model store."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path

import onnx

from serving.artifact_format import OUTPUT_NAMES, SCHEMA_VERSION, read_metadata, sign_metadata
from serving.atomic_write import atomic_write_bytes
from training.jsonio import clean_json
from training.models import Classifier
from training.onnx_graph import OPSET, ScoredModel
from training.reliability import VertexGeometry
from training.rundir import read_metrics
from training.score import score_definition
from training.signing import sign_model
from training.version import code_version

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.onnx"
BENTO_MODEL_NAME = "binenc"


def training_summary(run_dir: Path) -> dict:
    """The headline numbers of ``metrics.json`` (accuracies, geometry) for the metadata."""
    m = read_metrics(run_dir)
    out = {
        k: m[k] for k in ("train_acc", "val_acc", "test_acc", "bimodal_dims", "all_dims_bimodal") if k in m
    }
    for split in ("train", "val", "test"):
        s = m.get(split)
        if isinstance(s, dict):
            out[split] = {
                k: s[k] for k in ("same_encoding", "distinct_class_codes", "nc1", "sigma_w_rel") if k in s
            }
    return clean_json(out)


def register_artifact(path: Path, metadata: dict) -> str:
    """Store ``path`` in the BentoML model store as ``binenc:<version>``; returns the tag."""
    import shutil

    import bentoml

    labels = {
        "dataset": metadata["dataset"],
        "variant": metadata["variant"],
        "score": metadata["score"]["name"],
    }
    meta = {
        "schema_version": metadata["schema_version"],
        "name": metadata["name"],
        "checksum": metadata["checksum"],
        "threshold": metadata["threshold"],
        "target_accept_rate": metadata["target_accept_rate"],
        "acceptance_mode": metadata["acceptance"]["mode"],
        "classes": metadata["classes"],
        "input_shape": metadata["input"]["shape"],
        "backbone": metadata["backbone"],
        "code_version": metadata["code_version"],
        "created_at": metadata["created_at"],
        "artifact": ARTIFACT_NAME,
    }
    with bentoml.models.create(BENTO_MODEL_NAME, labels=labels, metadata=meta) as m:
        shutil.copyfile(path, Path(m.path) / ARTIFACT_NAME)
    return str(m.tag)


def artifact_metadata(
    run_dir: Path,
    model: Classifier,
    scored: ScoredModel,
    geometry: VertexGeometry | None,
    classes: list[str],
    dataset: str,
    threshold: float,
    target_accept_rate: float | None,
    acceptance: dict,
    calibration: dict,
) -> dict:
    """The artifact's metadata (:mod:`serving.artifact_format`'s schema), before it is signed."""
    mc = model.cfg
    geo_md, codebook = geometry.to_metadata() if geometry is not None else (None, {})
    score = {
        "name": scored.score.name,
        "direction": "higher = more reliable",
        "definition": score_definition(scored.score),
    }
    return clean_json(
        {
            "schema_version": SCHEMA_VERSION,
            "name": run_dir.resolve().name,
            "classes": classes,
            "input": {
                "shape": list(mc.input_shape),
                "layout": "NCHW",
                "dtype": "float32",
                "pixel_range": [0, 1],
                "normalisation": {"mean": list(mc.mean), "std": list(mc.std), "applied_in_graph": True},
            },
            "outputs": list(OUTPUT_NAMES),
            "variant": mc.variant,
            "dataset": dataset,
            "backbone": mc.backbone,
            "latent_dim": int(model.latent_width),
            "score": score,
            "threshold": threshold,
            "target_accept_rate": target_accept_rate,
            "acceptance": acceptance,
            "geometry": geo_md,
            "codebook": codebook,
            "training_metrics": training_summary(run_dir),
            "calibration": calibration,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "opset": OPSET,
        }
    )


def write_signed(proto: onnx.ModelProto, metadata: dict, out: Path, sign_key: str | Path | None) -> dict:
    """Embed the signed ``metadata`` (and an Ed25519 signature with ``sign_key``), check that the bytes load back,
    and write ``out`` atomically; returns the signed metadata."""
    signed = sign_metadata(proto, metadata)
    if sign_key is not None:
        log.info("signed with key id %s", sign_model(proto, sign_key))
    payload = proto.SerializeToString()
    _verify_bytes(payload, out)
    atomic_write_bytes(out, payload)
    return signed


def _verify_bytes(payload: bytes, out: Path) -> None:
    """The bytes about to be written must load back with a valid checksum (checked in a temp file)."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        p = Path(tmp) / out.name
        p.write_bytes(payload)
        read_metadata(p, verify=True)
