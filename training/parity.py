"""Parity of an exported graph: ONNX Runtime and PyTorch must give the same answers before an artifact is written.

:func:`check_parity` compares the outputs of both (:func:`torch_outputs`, :func:`ort_outputs`) on at least
:data:`MIN_PARITY_SAMPLES` images (:func:`parity_images`): the same argmax everywhere, probs within
:data:`PARITY_ATOL`, the reliability within ``PARITY_ATOL + PARITY_RTOL * |reliability|``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from serving.artifact_format import INPUT_NAME, OUTPUT_NAMES
from training.data import DatasetSplits
from training.inference import to_tensor

MIN_PARITY_SAMPLES = 256
PARITY_ATOL = 1e-5
# The reliability's float32 rounding grows with the compression: at gamma 1e4 the latent is ~6e-3 per dimension and
# the whitening ~30, so on the 6,000 validation images PyTorch and ONNX Runtime differ by up to 2.6e-5 of the
# reliability (3.7e-5 relative). Export bugs (a wrong normalisation or geometry) move it by 1e-2 or more. So the
# reliability is compared as numpy.isclose does, with a relative tolerance about 27 times the largest measured
# relative difference and 10 times below a 1% error.
PARITY_RTOL = 1e-3


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on the exported graph; nothing was written."""


def torch_outputs(scored: nn.Module, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """:data:`~serving.artifact_format.OUTPUT_NAMES` of the torch module the graph was exported from, for uint8 images."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            outs = scored(to_tensor(images[i : i + batch_size]))
            for n, v in zip(OUTPUT_NAMES, outs, strict=True):
                parts[n].append(v.cpu().numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}


def ort_outputs(model_bytes: bytes, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """The same outputs from ONNX Runtime running the serialised graph (CPU, the caller's torch thread count)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # respect the caller's CPU budget
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    parts: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].astype(np.float32) / 255.0
        for n, v in zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x}), strict=True):
            parts[n].append(v)
    return {n: np.concatenate(v) for n, v in parts.items()}


def check_parity(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    atol: float = PARITY_ATOL,
    rtol: float = PARITY_RTOL,
) -> dict:
    """Same argmax on every sample; probs within ``atol``; reliability within ``atol + rtol * |reliability|``.
    Raises :class:`ParityError`."""
    n = len(ref["logits"])
    if n < MIN_PARITY_SAMPLES:
        raise ParityError(f"parity needs >= {MIN_PARITY_SAMPLES} samples, got {n}")
    argmax_diff = int((ref["logits"].argmax(1) != got["logits"].argmax(1)).sum())
    probs_diff = float(np.abs(ref["probs"] - got["probs"]).max())
    rel_diff = float(np.abs(ref["reliability"] - got["reliability"]).max())
    rel_ok = bool(np.isclose(got["reliability"], ref["reliability"], rtol=rtol, atol=atol).all())
    nearest_agree = float((ref["nearest_vertex_class"] == got["nearest_vertex_class"]).mean())
    stats = {
        "samples": n,
        "argmax_mismatches": argmax_diff,
        "max_abs_diff_probs": probs_diff,
        "max_abs_diff_reliability": rel_diff,
        "nearest_class_agreement": nearest_agree,
        "atol": atol,
        "rtol_reliability": rtol,
    }
    if argmax_diff or probs_diff > atol or not rel_ok:
        raise ParityError(
            f"ONNX Runtime and PyTorch disagree on {n} validation samples: {argmax_diff} argmax mismatches "
            f"(expected 0), max |probs diff| {probs_diff:.3g} and max |reliability diff| {rel_diff:.3g} "
            f"(expected <= {atol}, reliability <= {atol} + {rtol} x reliability); nothing was written"
        )
    return stats


def parity_images(data: DatasetSplits, minimum: int = MIN_PARITY_SAMPLES) -> tuple[np.ndarray, str]:
    """The validation images, topped up with training images when the validation split is tiny."""
    if len(data.val) >= minimum:
        return data.val.images, f"val ({len(data.val)})"
    extra = minimum - len(data.val)
    images = np.concatenate([data.val.images, data.train.images[:extra]])
    if len(images) >= minimum:
        return images, f"val ({len(data.val)}) + first {extra} train (val split smaller than {minimum})"
    images = np.concatenate(
        [images, data.test.images]
    )  # a tiny dataset: all of it, repeated up to ``minimum``
    return (
        np.resize(images, (minimum, *images.shape[1:])),
        f"val ({len(data.val)}) + train ({len(data.train)}) + test ({len(data.test)}), repeated to {minimum} "
        f"(dataset smaller than {minimum})",
    )
