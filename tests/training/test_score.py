"""training.score (the torch score module) against the numpy oracle and the ONNX graph it exports to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from serving.artifact_format import OUTPUT_NAMES
from training.reliability import MaxSoftmax, VertexGeometry
from training.score import ScoreOutputs, SoftmaxScore, VertexScore, score_definition, score_module

SCORE_NAMES = OUTPUT_NAMES[3:]


@pytest.fixture()
def geometry() -> VertexGeometry:
    """3 classes on a 4-d hypercube with asymmetric peaks, off-vertex centres and a correlated whitening."""
    rng = np.random.default_rng(0)
    codes = np.array([[-1, -1, -1, 1], [1, 1, -1, -1], [1, -1, 1, 1]], np.float32)
    centres = codes + 0.1 * rng.standard_normal(codes.shape)
    m = rng.standard_normal((4, 4))
    whiten = np.linalg.cholesky(np.linalg.inv(m @ m.T / 4 + 0.05 * np.eye(4)))
    return VertexGeometry(
        np.array([-2.0, -1.0, 0.0, 3.0]),
        np.array([2.0, 3.0, 1.0, 3.5]),
        codes,
        ["a", "b", "c"],
        None,
        centres,
        whiten,
    )


def _inputs(geo: VertexGeometry, n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = np.concatenate(
        [
            geo.codes[rng.integers(0, 3, n // 2)] + 0.3 * rng.standard_normal((n // 2, 4)),
            3 * rng.standard_normal((n - n // 2, 4)),
        ]
    )
    z = (u * geo.half_edge + geo.midpoint).astype(np.float32)
    return z, (3 * rng.standard_normal((n, 3))).astype(np.float32)


def _as_dict(out: ScoreOutputs) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in out._asdict().items()}


def test_output_order_is_the_artifacts():
    assert ScoreOutputs._fields == SCORE_NAMES


def test_vertex_score_matches_the_numpy_oracle(geometry):
    z, logits = _inputs(geometry)
    got = _as_dict(VertexScore(geometry)(torch.from_numpy(logits), torch.from_numpy(z)))
    ref = geometry.score(z, logits)
    np.testing.assert_array_equal(got["nearest_vertex_class"], ref["nearest_vertex_class"])
    assert got["nearest_vertex_class"].dtype == np.int64 and (ref["nearest_vertex_class"] == -1).any()
    for k in SCORE_NAMES[1:]:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_softmax_score_matches_the_numpy_oracle():
    logits = np.random.default_rng(2).normal(0, 4, (300, 5)).astype(np.float32)
    got = _as_dict(SoftmaxScore()(torch.from_numpy(logits), torch.zeros(300, 2)))
    ref = MaxSoftmax().score(np.zeros((300, 2)), logits)
    np.testing.assert_array_equal(got["nearest_vertex_class"], ref["nearest_vertex_class"])
    for k in SCORE_NAMES[1:]:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_attack_entry_points_agree_with_forward(geometry):
    z, logits = map(torch.from_numpy, _inputs(geometry))
    for score in (VertexScore(geometry), SoftmaxScore()):
        out = score(logits, z)
        pred = logits.argmax(1)
        torch.testing.assert_close(
            score.neg_log_reliability_to(logits, z, pred), -torch.log(out.reliability), rtol=1e-5, atol=1e-5
        )
        th = float(out.reliability.median())
        assert torch.equal(score.accepted(logits, z, th), out.reliability >= th)
    vertex = VertexScore(geometry)
    torch.testing.assert_close(
        vertex.dist_class_centre_to(z, logits.argmax(1)), vertex(logits, z).dist_class_centre
    )


def test_neg_log_reliability_is_differentiable_and_stable(geometry):
    z, logits = (torch.from_numpy(a).requires_grad_() for a in _inputs(geometry, 20))
    target = torch.full((20,), 2)
    VertexScore(geometry).neg_log_reliability_to(logits, z, target).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # -log softmax for very confident wrong logits stays finite (log_softmax, not log(softmax)).
    big = torch.tensor([[1e4, 0.0, -1e4]])
    nl = SoftmaxScore().neg_log_reliability_to(big, big, torch.tensor([2]))
    assert torch.isfinite(nl).all() and nl.item() == pytest.approx(2e4)


def test_buffers_are_named_after_what_they_hold(geometry):
    score = score_module(geometry)
    assert isinstance(score, VertexScore) and isinstance(score_module(None), SoftmaxScore)
    assert set(dict(score.named_buffers())) == {"midpoint", "half_edge", "codes", "centres", "whiten"}
    np.testing.assert_allclose(score.midpoint.numpy(), geometry.midpoint)
    assert "exp(-dist_class_centre)" in score_definition(score) and "\n" not in score_definition(score)
    assert "max" in score_definition(SoftmaxScore())


class _TinyNet(nn.Module):
    """pixels (N, 1, 4, 4) -> (logits (N, 3), z (N, 4))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(16, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        z = self.enc(x.flatten(1)) * 3
        return self.head(z), z


def test_onnx_graph_equals_torch_module_and_oracle(geometry):
    import onnxruntime as ort

    from training.onnx_graph import ScoredModel, to_onnx

    scored = ScoredModel(_TinyNet(), geometry).eval()
    proto = to_onnx(scored, (1, 4, 4))
    inits = {i.name for i in proto.graph.initializer}
    assert {"score.midpoint", "score.half_edge"} <= inits and not inits & {"t", "a", "score.t", "score.a"}
    x = np.random.default_rng(3).random((256, 1, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    graph = dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {"pixels": x}), strict=True))
    with torch.no_grad():
        eager = dict(zip(OUTPUT_NAMES, (v.numpy() for v in scored(torch.from_numpy(x))), strict=True))
    oracle = geometry.score(eager["z"], eager["logits"])
    for k in OUTPUT_NAMES[3:]:
        np.testing.assert_allclose(graph[k], eager[k], rtol=1e-5, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(oracle[k], eager[k], rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(graph["probs"], oracle["probs"], atol=1e-6)
