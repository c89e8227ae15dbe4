import itertools

import numpy as np
import pytest

from training.geometry import (
    agrees_with_class_code,
    class_codes,
    collapse_stats,
    fit_peaks,
    latent_geometry,
    same_encoding_fraction,
    sign_codes,
)


def hypercube_latents(n_per_class=50, d=4, noise=0.01, asym=False, seed=0):
    rng = np.random.default_rng(seed)
    vertices = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))[:10]
    if asym:
        vertices = np.where(vertices > 0, 3.0, -0.5)
    labels = np.repeat(np.arange(10), n_per_class)
    z = vertices[labels] + noise * rng.standard_normal((len(labels), d))
    return z, labels


def test_perfect_hypercube_has_fraction_one_and_k_codes():
    z, y = hypercube_latents()
    peaks = [fit_peaks(z[:, j]) for j in range(z.shape[1])]
    g = latent_geometry(z, y, y, 10, peaks)
    assert g["same_encoding"] == 1.0
    assert g["same_encoding_correct"] == 1.0
    assert g["distinct_class_codes"] == 10
    assert all(p.bimodal for p in peaks)
    assert g["nc1"] < 1e-3


def test_asymmetric_peaks_are_found_and_midpoint_between_them():
    z, y = hypercube_latents(asym=True)
    p = fit_peaks(z[:, 0])
    assert p.low == pytest.approx(-0.5, abs=0.01) and p.high == pytest.approx(3.0, abs=0.01)
    assert p.midpoint == pytest.approx(1.25, abs=0.01)
    # raw sign codes fail here (both peaks not centred at 0) but midpoint codes don't
    peaks = [fit_peaks(z[:, j]) for j in range(z.shape[1])]
    g = latent_geometry(z, y, y, 10, peaks)
    assert g["same_encoding"] == 1.0


def test_gaussian_blob_is_not_bimodal():
    z = np.random.default_rng(0).standard_normal((2000, 3))
    assert not any(fit_peaks(z[:, j]).bimodal for j in range(3))


def test_same_encoding_counts_mismatches():
    codes = np.array([[0, 1], [0, 1], [1, 1], [1, 0]])
    pred = np.array([0, 0, 0, 1])
    assert same_encoding_fraction(codes, pred, 2) == pytest.approx(3 / 4)
    assert class_codes(codes, pred, 2) == {0: (0, 1), 1: (1, 0)}
    np.testing.assert_array_equal(agrees_with_class_code(codes, pred, 2), [True, True, False, True])


def test_edge_cases_do_not_crash():
    z, y = hypercube_latents(n_per_class=3)
    pred = np.zeros_like(y)
    pred[0] = 1  # class 1 predicted once; classes 2..9 never
    peaks = [fit_peaks(z[:, j]) for j in range(z.shape[1])]
    g = latent_geometry(z, pred, y, 10, peaks)
    assert g["classes_predicted"] == 2
    one_class = collapse_stats(z[:1], y[:1], 10)
    assert np.isnan(one_class["nc1"])
    assert fit_peaks(np.array([1.0])).separation == 0.0
    assert same_encoding_fraction(sign_codes(z[:0]), pred[:0], 10) != same_encoding_fraction(
        sign_codes(z[:0]), pred[:0], 10
    )  # NaN for an empty split
