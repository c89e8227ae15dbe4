"""The ``model.onnx`` contract: one self-contained ONNX file plus signed JSON metadata. No torch here.

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

Usage::

    art = load_artifact("runs/NAME/model.onnx")        # providers="auto": CUDA if it really works, else CPU
    out = art.run(pixels)                              # dict of the eight outputs
    accepted, reasons = art.decide(out)                # reliability >= art.threshold
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

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
DEFAULT_BATCH_SIZE = 256


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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Temp file in the same directory + fsync + ``os.replace``: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an artifact is meant to be read by the serving user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- reading and validating
def _read_model(path: Path) -> tuple[bytes, onnx.ModelProto]:
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


def _parse_metadata(path: Path, model: onnx.ModelProto) -> tuple[dict, dict]:
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


def _validate_metadata(path: Path, model: onnx.ModelProto, md: dict) -> None:
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


# --------------------------------------------------------------------------- execution providers
def _make_session(data: bytes, providers: str | list[str], threads: int | None = None, spinning: bool = True):
    import onnxruntime as ort

    available = ort.get_available_providers()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # no provider-fallback warnings on stderr; the chosen one is reported instead
    if providers == "auto":
        if "CUDAExecutionProvider" in available:
            try:
                sess = ort.InferenceSession(
                    data, opts, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                )
                if sess.get_providers()[0] == "CUDAExecutionProvider":
                    return sess
            except Exception:  # CUDA libraries missing / no device: fall back to CPU
                pass
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    wanted = [providers] if isinstance(providers, str) else list(providers)
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise ArtifactError(
            f"expected execution providers among {available}, got {unknown}; pass providers='auto' to use the "
            "best one that works"
        )
    try:
        return ort.InferenceSession(data, opts, providers=wanted)
    except Exception as err:
        raise ArtifactError(
            f"could not create an ONNX Runtime session with providers {wanted}: {err}"
        ) from None


# --------------------------------------------------------------------------- the artifact
def accepts(reliability: np.ndarray, threshold: float) -> np.ndarray:
    """The acceptance rule of every artifact: a row is answered when ``reliability >= threshold``."""
    return np.asarray(reliability) >= threshold


class Artifact:
    """An opened, verified artifact with a live ONNX Runtime session."""

    def __init__(
        self,
        path: Path,
        metadata: dict,
        annex: dict,
        session,
        batch_size: int = DEFAULT_BATCH_SIZE,
        signature: str | None = None,
        file_sha256: str | None = None,
    ):
        self.path = path
        self.metadata = metadata
        self.annex = annex
        self.session = session
        self.batch_size = batch_size
        self.signature = signature  # the SIGNATURE_KEY record (JSON) or None when unsigned
        self.file_sha256 = file_sha256  # sha256 of the file's bytes as read
        self.classes: list[str] = list(metadata["classes"])
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in metadata["input"]["shape"])  # type: ignore[assignment]
        self.threshold = float(metadata["threshold"])
        rate = metadata[
            "target_accept_rate"
        ]  # null when the threshold certifies a risk instead (``acceptance``)
        self.target_accept_rate = None if rate is None else float(rate)
        # how the threshold was set: artifacts from before the risk mode all targeted an accept rate
        self.acceptance: dict = metadata.get("acceptance") or {
            "mode": "accept_rate",
            "target_accept_rate": rate,
        }
        self.score_name: str = metadata["score"]["name"]
        self.provider: str = session.get_providers()[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def variant(self) -> str:
        return self.metadata["variant"]

    def __repr__(self) -> str:
        return (
            f"Artifact({str(self.path)!r}, variant={self.variant!r}, score={self.score_name!r}, "
            f"threshold={self.threshold:.6g}, provider={self.provider!r})"
        )

    def check_input(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ArtifactError(
                f"expected pixels of shape (N, {', '.join(map(str, self.input_shape))}) (NCHW), got {x.shape}"
            )
        if x.dtype == np.uint8:
            raise ArtifactError("expected float32 pixels in [0, 1], got uint8: divide by 255 first")
        if not np.issubdtype(x.dtype, np.floating):
            raise ArtifactError(f"expected float32 pixels in [0, 1], got dtype {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, pixels: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """All :data:`OUTPUT_NAMES` for float32 (N, C, H, W) pixels in [0, 1], computed in batches."""
        x = self.check_input(pixels)
        bs = batch_size or self.batch_size
        if len(x) == 0:
            out = self.session.run(
                list(OUTPUT_NAMES), {INPUT_NAME: np.zeros((1, *self.input_shape), np.float32)}
            )
            return {name: v[:0] for name, v in zip(OUTPUT_NAMES, out, strict=True)}
        parts: list[list[np.ndarray]] = [[] for _ in OUTPUT_NAMES]
        for i in range(0, len(x), bs):
            out = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i : i + bs]})
            for acc, v in zip(parts, out, strict=True):
                acc.append(v)
        return {name: np.concatenate(acc) for name, acc in zip(OUTPUT_NAMES, parts, strict=True)}

    def decide(
        self, outputs: dict[str, np.ndarray], threshold: float | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """``accepted = reliability >= threshold`` (default: the calibrated one) and a reason per rejected row.

        Reasons: ``"unoccupied_vertex"`` (the nearest vertex belongs to no class), ``"disagrees_with_argmax"``
        (it belongs to another class than the prediction), else ``"below_threshold"``; ``None`` when accepted.
        """
        th = self.threshold if threshold is None else float(threshold)
        rel = np.asarray(outputs["reliability"]).reshape(-1)
        nearest = np.asarray(outputs["nearest_vertex_class"]).reshape(-1)
        pred = np.asarray(outputs["logits"]).argmax(axis=1)
        accepted = accepts(rel, th)
        reasons: list[str | None] = []
        for ok, nc, p in zip(accepted.tolist(), nearest.tolist(), pred.tolist(), strict=True):
            if ok:
                reasons.append(None)
            elif nc == -1:
                reasons.append("unoccupied_vertex")
            elif nc != p:
                reasons.append("disagrees_with_argmax")
            else:
                reasons.append("below_threshold")
        return accepted, reasons


def load_artifact(
    path: str | Path,
    providers: str | list[str] = "auto",
    *,
    threads: int | None = None,
    spinning: bool = True,
) -> Artifact:
    """Open ``path`` (read once), verify schema version and checksum, and start a session on a provider that
    really works.

    ``providers="auto"`` uses CUDAExecutionProvider only if ONNX Runtime offers it *and* a session can be created
    on it, else CPUExecutionProvider; ``Artifact.provider`` says which one the session really uses.
    ``threads`` caps ONNX Runtime's intra-op CPU threads (default: ONNX Runtime's choice); ``spinning=False``
    stops idle threads from busy-waiting.

    The shipped model on an example image (from the checkout's root):

    >>> import numpy as np
    >>> from PIL import Image
    >>> art = load_artifact("models/fashion-mnist_bin_enc/model.onnx", providers="CPUExecutionProvider")
    >>> art.input_shape, art.classes[9]
    ((1, 28, 28), 'ankle boot')
    >>> gray = Image.open("examples/fashion-mnist-ankle-boot.png").convert("L")
    >>> pixels = np.asarray(gray, dtype=np.float32)[None, None] / 255  # (N, C, H, W) in [0, 1]
    >>> out = art.run(pixels)
    >>> accepted, reasons = art.decide(out)
    >>> art.classes[int(out["logits"].argmax(1)[0])], bool(accepted[0]), reasons[0]
    ('ankle boot', True, None)
    """
    path = Path(path)
    data, model = _read_model(path)
    metadata, annex = _parse_metadata(path, model)
    _validate_metadata(path, model, metadata)
    session = _make_session(data, providers, threads, spinning)
    return Artifact(
        path,
        metadata,
        annex,
        session,
        signature=get_props(model).get(SIGNATURE_KEY),
        file_sha256=hashlib.sha256(data).hexdigest(),
    )


def read_metadata(path: str | Path, verify: bool = True) -> tuple[dict, dict]:
    """``(metadata, annex)`` of an artifact without starting a session."""
    path = Path(path)
    _, model = _read_model(path)
    metadata, annex = _parse_metadata(path, model)
    if verify:
        _validate_metadata(path, model, metadata)
    return metadata, annex


def write_annex(path: str | Path, updates: dict) -> None:
    """Merge ``updates`` into the artifact's unsigned annex JSON and rewrite the file atomically.

    Top-level keys are replaced (not deep-merged). The signed metadata and its checksum are unaffected.
    """
    path = Path(path)
    _, model = _read_model(path)
    metadata, annex = _parse_metadata(path, model)
    _validate_metadata(path, model, metadata)
    merged = copy.deepcopy(annex)
    merged.update(updates)
    try:
        text = json.dumps(merged, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"annex updates must be JSON-serialisable without NaN/Inf: {err}") from None
    set_prop(model, ANNEX_KEY, text)
    atomic_write_bytes(path, model.SerializeToString())
