"""The scored torch module an export compiles and its ONNX graph, checked against PyTorch before it is written.

:class:`ScoredModel` wraps a classifier and its score module (:mod:`training.score`) so that one graph computes
every :data:`~serving.artifact_format.OUTPUT_NAMES`; :func:`to_onnx` exports it with a dynamic batch and every initializer
embedded; :func:`checked_graph` adds ``onnx.checker`` and the ONNX Runtime / PyTorch parity check
(:mod:`training.parity`).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from serving.artifact_format import INPUT_NAME, OUTPUT_NAMES
from training.data import DatasetSplits
from training.inference import forward_batches
from training.models import Classifier
from training.parity import check_parity, ort_outputs, parity_images, torch_outputs
from training.reliability import VertexGeometry
from training.score import score_module

OPSET = 18


class ScoredModel(nn.Module):
    """Classifier + score module: ``pixels -> OUTPUT_NAMES`` (what the ONNX graph computes).

    ``model(pixels) -> (logits, z)``; then ``probs = softmax(logits)`` and the outputs of
    :func:`training.score.score_module` (the vertex score with a geometry, max-softmax without one).
    """

    def __init__(self, model: Classifier, geometry: VertexGeometry | None):
        super().__init__()
        self.model = model
        self.score = score_module(geometry)

    def forward(self, pixels: torch.Tensor):
        logits, z = self.model(pixels)
        return (logits, torch.softmax(logits, dim=1), z, *self.score(logits, z))


def fit_score(model: Classifier, data: DatasetSplits) -> VertexGeometry | None:
    """The vertex geometry for ``bin_enc`` (fitted on the training split), ``None`` (max-softmax) otherwise."""
    if model.cfg.variant != "bin_enc":
        return None
    logits, z = forward_batches(model, data.train.images)
    return VertexGeometry.fit(
        z, logits.argmax(1), data.train.labels, classes=list(data.classes), num_classes=data.num_classes
    )


STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def to_onnx(scored: nn.Module, input_shape: tuple[int, int, int]) -> onnx.ModelProto:
    """Export with a dynamic batch dimension and every initializer embedded."""
    scored.eval()
    example = torch.rand(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            scored,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"pixels": {0: batch}},
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    # Make sure nothing lives in external data: round-trip through bytes with everything inline.
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"initializer {init.name} was exported as external data; expected it embedded")
    # The exporter records each node's Python stack trace, i.e. the paths of the source files on the machine that
    # exported it: an artifact must not carry them (and without them the same code exports the same graph).
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    return model


def checked_graph(
    scored: nn.Module, input_shape: tuple[int, int, int], data: DatasetSplits
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], dict]:
    """``scored`` exported (:func:`to_onnx`), checked by ``onnx.checker`` and run by ONNX Runtime and PyTorch on the
    parity images (:func:`training.parity.parity_images`, the validation split first); returns the graph, its
    outputs on those images and the parity report. Raises :class:`~training.parity.ParityError` on a mismatch."""
    proto = to_onnx(scored, input_shape)
    onnx.checker.check_model(proto, full_check=True)
    graph_bytes = proto.SerializeToString()
    images, parity_source = parity_images(data)
    ref = torch_outputs(scored, images)
    got = ort_outputs(graph_bytes, images)
    parity = check_parity(ref, got)
    parity["source"] = parity_source
    return proto, got, parity
