"""The ``model.onnx`` format: graph names, the signed metadata (schema, checksum), the unsigned annex; reading
and verifying an artifact's metadata without starting a session. No torch here.

Layout of an artifact (written by ``training.export``):

* graph input ``pixels``: float32 (N, C, H, W), values in [0, 1] (normalisation is inside the graph);
* graph outputs, in this order (:data:`OUTPUT_NAMES`):

  ``logits`` float32 (N, K), ``probs`` float32 (N, K) softmax, ``z`` float32 (N, d) latent,
  ``nearest_vertex_class`` int64 (N,) class whose hypercube vertex is nearest to z, or -1 if that vertex is unoccupied,
  ``dist_nearest_vertex`` / ``dist_predicted_vertex`` float32 (N,) scale-free distance to the nearest vertex / to the predicted
  class's vertex (half-edge units), ``dist_class_centre`` float32 (N,) Mahalanobis distance to the predicted class's
  vertex centre (within-class spread units; the reliability's input), ``reliability`` float32 (N,) in [0, 1],
  higher = more reliable;
* ``metadata_props[METADATA_KEY]``: JSON (schema :data:`SCHEMA_VERSION`) whose ``checksum`` field is the sha256
  of the graph bytes plus the canonical JSON of the other fields (:func:`compute_checksum`); the loader refuses
  an artifact whose checksum does not match;
* ``metadata_props[SIGNATURE_KEY]``: optional Ed25519 signature of the checksum (:mod:`serving.signing`);
* ``metadata_props[ANNEX_KEY]``: unsigned JSON for later additions (e.g. the robustness bench summary), merged
  by :func:`write_annex` without touching the signed part.

The loader (:func:`serving.artifact.load_artifact`) reads and verifies a file with the functions here before it
starts a session.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import onnx

from .atomic_write import atomic_write_bytes

SCHEMA_VERSION = (
    3  # v3: distance outputs named after what they measure; geometry "midpoint" (was "threshold")
)
METADATA_KEY = "binenc"
ANNEX_KEY = "binenc.annex"
SIGNATURE_KEY = "binenc.signature"
INPUT_NAME = "pixels"
OUTPUT_NAMES = (
    "logits",
    "probs",
    "z",
    "nearest_vertex_class",
    "dist_nearest_vertex",
    "dist_predicted_vertex",
    "dist_class_centre",
    "reliability",
)
SCORE_NAMES = ("vertex_distance", "max_softmax")
REQUIRED_FIELDS = (
    "schema_version",
    "name",
    "classes",
    "input",
    "variant",
    "dataset",
    "latent_dim",
    "score",
    "threshold",
    "target_accept_rate",
    "codebook",
    "created_at",
    "code_version",
    "checksum",
)


class ArtifactError(Exception):
    """Any problem opening or using an artifact (missing file, tampered, wrong schema, bad metadata or input)."""


# --------------------------------------------------------------------------- checksum
def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace, no NaN) used for the checksum."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_checksum(model: onnx.ModelProto, metadata: dict) -> str:
    """sha256 over the serialised graph and the canonical JSON of ``metadata`` without its ``checksum`` field."""
    h = hashlib.sha256()
    h.update(model.graph.SerializeToString(deterministic=True))
    h.update(b"\n")
    h.update(canonical_json({k: v for k, v in metadata.items() if k != "checksum"}).encode())
    return "sha256:" + h.hexdigest()


def get_props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_prop(model: onnx.ModelProto, key: str, value: str) -> None:
    """Set (replace) one ``metadata_props`` entry."""
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def sign_metadata(model: onnx.ModelProto, metadata: dict) -> dict:
    """Add the checksum to ``metadata`` and store it in ``model``; returns the signed copy."""
    signed = dict(metadata)
    signed["schema_version"] = signed.get("schema_version", SCHEMA_VERSION)
    signed["checksum"] = compute_checksum(model, signed)
    set_prop(model, METADATA_KEY, canonical_json(signed))
    return signed


# --------------------------------------------------------------------------- reading and validating
def read_model(path: Path) -> tuple[bytes, onnx.ModelProto]:
    """The file's bytes (read once) and the ONNX model they hold."""
    if not path.is_file():
        raise ArtifactError(
            f"no artifact at {path}: expected a model.onnx written by `python -m training.export RUN_DIR`; "
            "export the run first (or pass the right path)"
        )
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ArtifactError(
            f"{path} is not a readable ONNX model ({type(err).__name__}: {err}); the file is corrupt or "
            "truncated: re-export it with `python -m training.export RUN_DIR`"
        ) from None
    return data, model


def parse_metadata(path: Path, model: onnx.ModelProto) -> tuple[dict, dict]:
    """``(metadata, annex)`` as stored in ``model``'s ``metadata_props``, not yet verified."""
    keys = [p.key for p in model.metadata_props]
    repeated = sorted({k for k in keys if k.startswith(METADATA_KEY) and keys.count(k) > 1})
    if repeated:
        raise ArtifactError(
            f"{path}: metadata_props holds {repeated} more than once; which entry is meant is "
            "ambiguous, so the file is refused: re-export the run"
        )
    props = get_props(model)
    if METADATA_KEY not in props:
        raise ArtifactError(
            f"{path}: expected ONNX metadata_props key {METADATA_KEY!r} (binenc schema v{SCHEMA_VERSION}), got keys "
            f"{sorted(props)}; this is not a binenc artifact: export it with `python -m training.export RUN_DIR`"
        )
    try:
        metadata = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ArtifactError(
            f"{path}: metadata {METADATA_KEY!r} is not valid JSON ({err}); re-export the run"
        ) from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: expected metadata to be a JSON object, got {type(metadata).__name__}")
    annex: dict = {}
    if ANNEX_KEY in props:
        try:
            annex = json.loads(props[ANNEX_KEY])
        except json.JSONDecodeError as err:
            raise ArtifactError(
                f"{path}: annex {ANNEX_KEY!r} is not valid JSON ({err}); rewrite it with write_annex()"
            ) from None
        if not isinstance(annex, dict):
            raise ArtifactError(f"{path}: expected the annex to be a JSON object, got {type(annex).__name__}")
    return metadata, annex


def validate_metadata(path: Path, model: onnx.ModelProto, md: dict) -> None:
    """Schema version, required fields, checksum, classes, input shape, score, threshold and graph names."""
    version = md.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = (
            "upgrade binenc (serving) to read it"
            if isinstance(version, int) and version > SCHEMA_VERSION
            else "re-export the run with this version of `python -m training.export`"
        )
        raise ArtifactError(
            f"{path}: expected metadata schema_version {SCHEMA_VERSION}, got {version!r}; {hint}"
        )
    missing = [k for k in REQUIRED_FIELDS if k not in md]
    if missing:
        raise ArtifactError(
            f"{path}: metadata (schema v{SCHEMA_VERSION}) lacks required fields {missing}; re-export the run"
        )
    expected = compute_checksum(model, md)
    if md["checksum"] != expected:
        raise ArtifactError(
            f"{path}: checksum mismatch: expected {expected} (computed from the graph and metadata), got "
            f"{md['checksum']} (stored). The graph or the signed metadata was modified after export; "
            "do not edit model.onnx by hand (use write_annex for unsigned additions) and re-export the run"
        )
    classes = md["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ArtifactError(
            f"{path}: expected metadata 'classes' to be a non-empty list of strings, got {classes!r}"
        )
    shape = md["input"].get("shape") if isinstance(md["input"], dict) else None
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ArtifactError(
            f"{path}: expected metadata input.shape [C, H, W] of positive ints, got {shape!r}"
        )
    score = md["score"].get("name") if isinstance(md["score"], dict) else None
    if score not in SCORE_NAMES:
        raise ArtifactError(f"{path}: expected score.name in {SCORE_NAMES}, got {score!r}; re-export the run")
    th = md["threshold"]
    if not isinstance(th, int | float) or not 0.0 <= th <= 1.0:
        raise ArtifactError(f"{path}: expected a threshold in [0, 1], got {th!r}; re-export the run")
    inputs = [i.name for i in model.graph.input]
    outputs = tuple(o.name for o in model.graph.output)
    if inputs != [INPUT_NAME] or outputs != OUTPUT_NAMES:
        raise ArtifactError(
            f"{path}: expected graph input [{INPUT_NAME!r}] and outputs {list(OUTPUT_NAMES)}, got {inputs} and "
            f"{list(outputs)}; re-export the run with this version of training.export"
        )


def read_metadata(path: str | Path, verify: bool = True) -> tuple[dict, dict]:
    """``(metadata, annex)`` of an artifact without starting a session."""
    path = Path(path)
    _, model = read_model(path)
    metadata, annex = parse_metadata(path, model)
    if verify:
        validate_metadata(path, model, metadata)
    return metadata, annex


def write_annex(path: str | Path, updates: dict) -> None:
    """Merge ``updates`` into the artifact's unsigned annex JSON and rewrite the file atomically.

    Top-level keys are replaced (not deep-merged). The signed metadata and its checksum are unaffected.
    """
    path = Path(path)
    _, model = read_model(path)
    metadata, annex = parse_metadata(path, model)
    validate_metadata(path, model, metadata)
    merged = copy.deepcopy(annex)
    merged.update(updates)
    try:
        text = json.dumps(merged, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"annex updates must be JSON-serialisable without NaN/Inf: {err}") from None
    set_prop(model, ANNEX_KEY, text)
    atomic_write_bytes(path, model.SerializeToString())
