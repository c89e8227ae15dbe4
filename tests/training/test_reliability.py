"""VertexGeometry on synthetic latents with known answers; calibration; the max-softmax baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.calibration import calibrate_threshold, fpr_at_tpr
from training.reliability import (
    GeometryError,
    MaxSoftmax,
    VertexGeometry,
    code_string,
    parse_code,
)


def synthetic(
    codes: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    n_per_class: int = 300,
    noise: float = 0.03,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Latents sitting at the vertices ``where(code, high, low)`` plus Gaussian noise; labels = class index."""
    rng = np.random.default_rng(seed)
    centres = np.where(codes > 0, high, low)
    z = np.concatenate([c + noise * rng.standard_normal((n_per_class, len(c))) for c in centres])
    y = np.repeat(np.arange(len(codes)), n_per_class)
    return z.astype(np.float32), y


def logits_for(pred: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(pred), k), np.float32)
    out[np.arange(len(pred)), pred] = 5.0
    return out


def test_symmetric_peaks_recovered():
    codes = np.array(list(itertools.product([-1, 1], repeat=2)), np.float32)  # 4 classes on a square
    z, y = synthetic(codes, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    geo = VertexGeometry.fit(z, y, y, classes=["a", "b", "c", "d"])
    np.testing.assert_allclose(geo.low, [-1, -1], atol=0.01)
    np.testing.assert_allclose(geo.high, [1, 1], atol=0.01)
    np.testing.assert_allclose(geo.midpoint, [0, 0], atol=0.01)
    np.testing.assert_allclose(geo.half_edge, [1, 1], atol=0.01)
    np.testing.assert_array_equal(geo.codes, codes)
    assert geo.to_metadata()[1] == {"a": "00", "b": "01", "c": "10", "d": "11"}


def test_asymmetric_peaks_and_scale_free():
    # Dimension 0 splits 1 class vs 4 with peaks at -0.2 / +1.4; dimension 2 lives in a different unit.
    codes = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [-1, 1, 1], [-1, -1, -1]], np.float32)
    low, high = np.array([-0.2, -3.0, 10.0]), np.array([1.4, 1.0, 10.5])
    z, y = synthetic(codes, low, high, noise=0.01)
    geo = VertexGeometry.fit(z, y, y)
    np.testing.assert_allclose(geo.low, low, atol=0.01)
    np.testing.assert_allclose(geo.high, high, atol=0.01)
    np.testing.assert_allclose(geo.midpoint, (low + high) / 2, atol=0.01)
    np.testing.assert_allclose(geo.half_edge, (high - low) / 2, atol=0.01)
    np.testing.assert_array_equal(geo.codes, codes)
    # Exactly on each class's ideal vertex -> dist_predicted_vertex 0, nearest = that class; the class centres (mean u of the
    # class, where the data put the vertex) sit within noise of it, and exactly there the reliability is 1.
    centres = np.where(codes > 0, geo.high, geo.low).astype(np.float32)
    out = geo.score(centres, logits_for(np.arange(5), 5))
    np.testing.assert_allclose(out["dist_predicted_vertex"], 0, atol=1e-5)
    np.testing.assert_array_equal(out["nearest_vertex_class"], np.arange(5))
    np.testing.assert_allclose(geo.centres, codes, atol=0.05)
    on_centre = (geo.centres * geo.half_edge + geo.midpoint).astype(np.float32)
    np.testing.assert_allclose(geo.score(on_centre, logits_for(np.arange(5), 5))["reliability"], 1, atol=1e-4)
    # Scale-free: the same latents in other units give the same outputs.
    scale, shift = np.array([3.0, 0.1, 50.0]), np.array([1.0, -2.0, 7.0])
    geo2 = VertexGeometry.fit(z * scale + shift, y, y)
    out2 = geo2.score(centres * scale + shift, logits_for(np.arange(5), 5))
    np.testing.assert_allclose(out2["reliability"], out["reliability"], atol=1e-4)
    np.testing.assert_array_equal(out2["nearest_vertex_class"], out["nearest_vertex_class"])


def test_whitened_class_distance_follows_the_within_class_spread():
    # Correlated, anisotropic within-class noise: large along (1, 1), small along (1, -1).
    rng = np.random.default_rng(3)
    codes = np.array([[-1, -1], [1, 1], [-1, 1]], np.float32)
    basis = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
    noise = (rng.standard_normal((3000, 2)) * [0.12, 0.02]) @ basis
    y = np.repeat(np.arange(3), 1000)
    z = (codes[y] + noise).astype(np.float32)
    geo = VertexGeometry.fit(z, y, y)
    u = geo.scaled(z)
    cov = np.cov((u - geo.centres[y]).T)
    np.testing.assert_allclose(geo.whiten @ geo.whiten.T, np.linalg.inv(cov), rtol=0.05)
    out = geo.score(z, logits_for(y, 3))
    assert np.mean(out["dist_class_centre"] ** 2) == pytest.approx(1.0, rel=0.05)  # chi2_d / d has mean 1
    np.testing.assert_allclose(out["reliability"], np.exp(-out["dist_class_centre"]), rtol=1e-6)
    # The same Euclidean step costs more across the spread than along it.
    step = 0.1 * basis * geo.half_edge
    centre = geo.centres[1] * geo.half_edge + geo.midpoint
    d = geo.score((centre + step).astype(np.float32), logits_for(np.array([1, 1]), 3))["dist_class_centre"]
    assert d[1] > 3 * d[0]


def test_fit_uses_correct_samples_only():
    codes = np.array([[-1, -1], [-1, 1], [1, -1]], np.float32)
    z, y = synthetic(codes, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    pred = y.copy()
    # 100 samples of class 0 sit on an outlier value and are misclassified: they must not move the peaks.
    z[:100] = 7.0
    pred[:100] = 1
    geo = VertexGeometry.fit(z, pred, y)
    np.testing.assert_allclose(geo.high, [1, 1], atol=0.02)


def test_duplicate_codes_clear_error():
    codes = np.array([[-1, -1], [1, 1], [1, 1], [-1, 1]], np.float32)
    z, y = synthetic(codes, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    with pytest.raises(GeometryError, match=r"classes 'cat', 'dog' share vertex 11"):
        VertexGeometry.fit(z, y, y, classes=["bird", "cat", "dog", "fish"])


def test_class_without_correct_samples_clear_error():
    codes = np.array([[-1, -1], [1, 1], [-1, 1]], np.float32)
    z, y = synthetic(codes, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    pred = np.where(y == 2, 0, y)
    with pytest.raises(GeometryError, match=r"classes \['c'\] have no correctly classified"):
        VertexGeometry.fit(z, pred, y, classes=["a", "b", "c"])


@pytest.fixture()
def cube() -> VertexGeometry:
    codes = np.array([[-1, -1, -1], [1, 1, -1], [1, -1, 1]], np.float32)
    return VertexGeometry(np.array([-2.0, -1.0, 0.0]), np.array([2.0, 3.0, 1.0]), codes, ["a", "b", "c"])


def test_score_definitions(cube):
    midpoint, half_edge = cube.midpoint, cube.half_edge
    u = np.array(
        [
            [-1.0, -1.0, -1.0],  # on vertex of class 0
            [0.5, 1.0, -1.0],  # near class 1 (nearest vertex = class 1)
            [1.0, 1.0, 1.0],  # unoccupied vertex 111
            [-0.9, -1.2, -0.7],
        ]
    )  # near class 0 but predicted as class 2
    z = (u * half_edge + midpoint).astype(np.float32)
    pred = np.array([0, 1, 1, 2])
    out = cube.score(z, logits_for(pred, 3))
    np.testing.assert_array_equal(out["nearest_vertex_class"], [0, 1, -1, 0])
    s = np.where(u > 0, 1, -1)
    np.testing.assert_allclose(
        out["dist_nearest_vertex"], np.sqrt(((u - s) ** 2).mean(1)), rtol=1e-5, atol=1e-6
    )
    v = cube.codes[pred]
    np.testing.assert_allclose(
        out["dist_predicted_vertex"], np.sqrt(((u - v) ** 2).mean(1)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(out["reliability"], np.exp(-out["dist_predicted_vertex"]), rtol=1e-6)
    assert out["reliability"][0] == pytest.approx(1.0)
    assert all(v.dtype == np.float32 for k, v in out.items() if k != "nearest_vertex_class")
    assert out["nearest_vertex_class"].dtype == np.int64


def test_reliability_monotone_and_bounded(cube):
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(3)
    vertex = np.where(cube.codes[1] > 0, cube.high, cube.low)
    steps = np.linspace(0, 5, 50)
    z = (vertex + steps[:, None] * direction * cube.half_edge).astype(np.float32)
    rel = cube.score(z, logits_for(np.full(50, 1), 3))["reliability"]
    assert rel[0] == pytest.approx(1.0)
    assert np.all(np.diff(rel) < 0)
    far = rng.standard_normal((1000, 3)).astype(np.float32) * 100
    r = cube.score(far, rng.standard_normal((1000, 3)))["reliability"]
    assert np.all((r >= 0) & (r <= 1))


def test_metadata_round_trip(cube):
    geo_md, book = cube.to_metadata()
    md = {"geometry": geo_md, "codebook": book, "classes": cube.classes}
    back = VertexGeometry.from_metadata(md)
    np.testing.assert_allclose(back.midpoint, cube.midpoint)
    np.testing.assert_allclose(back.half_edge, cube.half_edge)
    np.testing.assert_array_equal(back.codes, cube.codes)
    np.testing.assert_array_equal(back.centres, cube.centres)
    np.testing.assert_array_equal(back.whiten, cube.whiten)
    assert code_string(parse_code("0110")) == "0110"
    with pytest.raises(ValueError, match="0/1"):
        parse_code("01x")


def test_max_softmax_baseline():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 9.0, 1.0]], np.float32)
    out = MaxSoftmax().score(np.zeros((3, 4), np.float32), logits)
    np.testing.assert_allclose(out["probs"].sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(out["reliability"], out["probs"].max(1))
    np.testing.assert_array_equal(out["nearest_vertex_class"], [0, 0, 1])
    np.testing.assert_allclose(out["dist_predicted_vertex"], 1 - out["reliability"])
    np.testing.assert_allclose(out["dist_class_centre"], 1 - out["reliability"])


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.99])
def test_calibrate_threshold_hits_target(target):
    r = np.random.default_rng(0).random(1001).astype(np.float32)
    th = calibrate_threshold(r, target)
    rate = float((r >= th).mean())
    assert target <= rate <= target + 1.5 / len(r)


def test_calibrate_threshold_errors_and_fpr():
    with pytest.raises(ValueError, match="target_accept_rate"):
        calibrate_threshold(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="zero samples"):
        calibrate_threshold(np.array([]), 0.9)
    ident = np.linspace(0.5, 1.0, 101)
    assert fpr_at_tpr(ident, np.zeros(10)) == 0.0
    assert fpr_at_tpr(ident, np.ones(10)) == 1.0
