"""TiedGaussian: centres, pooled covariance (N - K), whitening and distances against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from training.mahalanobis import TiedGaussian


def _data(seed=0, n=600, k=3, d=4):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    a = rng.standard_normal((d, d))
    x = 5 * np.eye(k, d)[y] + rng.standard_normal((len(y), d)) @ a
    return x, y


def test_fit_matches_the_pooled_covariance_and_whitening():
    x, y = _data()
    g = TiedGaussian.fit(x, y, ridge=0.0)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    r = x - means[y]
    cov = r.T @ r / (len(x) - 3)
    np.testing.assert_allclose(g.centres, means)
    np.testing.assert_allclose(g.whiten @ g.whiten.T, np.linalg.inv(cov), rtol=1e-9)
    q = np.random.default_rng(1).standard_normal((7, 4)) * 3
    ref = np.stack([np.einsum("ij,jk,ik->i", q - m, np.linalg.inv(cov), q - m) for m in means], axis=1)
    np.testing.assert_allclose(g.sq_dist(q), ref, rtol=1e-9)


def test_fixed_centres_ridge_and_errors():
    x, y = _data()
    fixed = 5 * np.eye(3, 4)
    g = TiedGaussian.fit(x, y, centres=fixed)
    np.testing.assert_array_equal(g.centres, fixed)
    assert g.sq_dist(fixed).diagonal() == pytest.approx(0.0, abs=1e-12)
    collapsed = np.c_[x, np.zeros(len(x))]  # a dimension without variance: the ridge keeps it invertible
    assert np.isfinite(TiedGaussian.fit(collapsed, y).whiten).all()
    with pytest.raises(ValueError, match=r"classes without rows: \[3\]"):
        TiedGaussian.fit(x, y, num_classes=4)
