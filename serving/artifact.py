"""Opening an artifact (:mod:`serving.artifact_format`) for inference: the verified :class:`Artifact` with an ONNX
Runtime session on a provider that really works, and the acceptance rule of every artifact. No torch here.

Usage::

    art = load_artifact("runs/NAME/model.onnx")        # providers="auto": CUDA if it really works, else CPU
    out = art.run(pixels)                              # dict of the eight outputs
    accepted, reasons = art.decide(out)                # reliability >= art.threshold
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .artifact_format import (
    INPUT_NAME,
    OUTPUT_NAMES,
    SIGNATURE_KEY,
    ArtifactError,
    get_props,
    parse_metadata,
    read_model,
    validate_metadata,
)

DEFAULT_BATCH_SIZE = 256


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
    data, model = read_model(path)
    metadata, annex = parse_metadata(path, model)
    validate_metadata(path, model, metadata)
    session = _make_session(data, providers, threads, spinning)
    return Artifact(
        path,
        metadata,
        annex,
        session,
        signature=get_props(model).get(SIGNATURE_KEY),
        file_sha256=hashlib.sha256(data).hexdigest(),
    )
