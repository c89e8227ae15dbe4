"""A classifier given only as an ONNX file (``--onnx FILE``): read its input spec, find its logits, run it.

The file is read with :func:`onnx.load` without external data (a graph whose tensors live in other files is
refused: the bench reads the one file it was given and nothing else) and at most :data:`MAX_ONNX_BYTES`; ONNX
Runtime's CPU provider runs it with a bounded number of threads. The input is the graph's only input, float32
``(N, C, H, W)`` images in ``[0, 1]`` (the dataset's range; normalisation belongs inside the graph); ``(C, H, W)`` is
read from the graph, or given as ``--onnx-input-shape`` where the graph leaves it symbolic. The logits are the output
named ``--onnx-output``, else the output named ``logits``, else the graph's only output. Every refusal is an
:class:`OnnxModelError` with one line, before any work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from training.outside import OutsideModelError, check_logits

MAX_ONNX_BYTES = 2 * 1024**3
BATCH = 512


class OnnxModelError(ValueError):
    """The ONNX file cannot be benched (message: one line)."""


@dataclass(frozen=True)
class OnnxSpec:
    """What the bench needs to run one ``--onnx`` graph (picklable: ranks receive it, each opens its own session)."""

    path: str
    sha256: str
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int]
    num_classes: int


def _graph(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise OnnxModelError(f"--onnx {path}: no such file")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise OnnxModelError(f"--onnx {path}: {size} bytes, more than the {MAX_ONNX_BYTES} accepted")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise OnnxModelError(f"--onnx {path}: not a readable ONNX model: {type(err).__name__}") from err
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise OnnxModelError(
            f"--onnx {path}: {len(external)} tensor(s) stored in external files (e.g. "
            f"{external[0]!r}); save the model as one file"
        )
    return model


def _input_shape(model: onnx.ModelProto, path: Path, given: tuple[int, int, int] | None) -> tuple[str, tuple]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxModelError(
            f"--onnx {path}: expected one input (images), the graph has {len(inputs)}: "
            f"{', '.join(i.name for i in inputs)}"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise OnnxModelError(
            f"--onnx {path}: input {inputs[0].name!r} has rank {len(dims)}; expected images (N, C, H, W)"
        )
    graph_shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    if given is not None:
        clash = [(g, s) for g, s in zip(graph_shape, given, strict=True) if g is not None and g != s]
        if clash:
            raise OnnxModelError(f"--onnx-input-shape {given} does not fit the graph's input {graph_shape}")
        return inputs[0].name, tuple(given)
    if None in graph_shape:
        raise OnnxModelError(
            f"--onnx {path}: the graph's input shape {graph_shape} is symbolic; give --onnx-input-shape C,H,W"
        )
    return inputs[0].name, graph_shape


def _output_name(model: onnx.ModelProto, path: Path, given: str | None) -> str:
    names = [o.name for o in model.graph.output]
    if given:
        if given not in names:
            raise OnnxModelError(f"--onnx-output {given!r}: the graph's outputs are {', '.join(names)}")
        return given
    if "logits" in names:
        return "logits"
    if len(names) == 1:
        return names[0]
    raise OnnxModelError(
        f"--onnx {path}: {len(names)} outputs ({', '.join(names)}); name the logits with --onnx-output"
    )


def session(model_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with at most ``threads`` (default: torch's) intra-op threads and one inter-op."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def predictor(spec: OnnxSpec, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``pixels (N, C, H, W) -> logits (N, K)`` (float32 numpy, in batches of :data:`BATCH`) through the graph."""
    sess = session(_graph(Path(spec.path)).SerializeToString(), threads)

    def logits(pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, spec.num_classes), np.float32)
        outs = [
            sess.run([spec.output_name], {spec.input_name: x[i : i + BATCH]})[0]
            for i in range(0, len(x), BATCH)
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)

    return logits


def read_onnx(
    path: str | Path,
    input_shape: tuple[int, int, int],
    num_classes: int,
    given_shape: tuple[int, int, int] | None = None,
    output: str | None = None,
) -> OnnxSpec:
    """Check ``path`` against the dataset (``input_shape``, ``num_classes``) and that it returns logits; returns
    its :class:`OnnxSpec`. Raises :class:`OnnxModelError` (one line) for anything the bench cannot use."""
    p = Path(path)
    model = _graph(p)
    input_name, shape = _input_shape(model, p, given_shape)
    if tuple(shape) != tuple(input_shape):
        raise OnnxModelError(
            f"--onnx {p}: the graph takes images of shape {tuple(shape)}; the dataset's are "
            f"{tuple(input_shape)}"
        )
    spec = OnnxSpec(
        str(path),
        hashlib.sha256(p.read_bytes()).hexdigest(),
        input_name,
        _output_name(model, p, output),
        tuple(int(s) for s in shape),
        int(num_classes),
    )
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    try:
        sess = session(model.SerializeToString(), threads=1)
        out = np.asarray(sess.run([spec.output_name], {input_name: x})[0])
    except Exception as err:
        raise OnnxModelError(
            f"--onnx {p}: ONNX Runtime cannot run it on (4, {', '.join(map(str, shape))}) "
            f"float32 inputs: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        ) from err
    try:
        check_logits(torch.from_numpy(out), 4, num_classes, str(path), option="--onnx")
    except OutsideModelError as err:
        raise OnnxModelError(str(err)) from err
    return spec
