"""OOD sets (local, deterministic, right shape) and detectors (known answers on synthetic features)."""

from __future__ import annotations

import numpy as np
import pytest

from robustness import ood


def _id_images(n=50, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_ood_sets_have_the_models_shape_and_are_deterministic(tmp_path):
    id_imgs = _id_images()
    names = ("letters", "gaussian", "uniform", "inverted", "flipped", "digits", "mnist")
    a, skipped_a = ood.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 20, seed=1, names=names,
                                     mnist_dir=tmp_path)  # empty dir: mnist is skipped, not fatal
    b, _ = ood.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 20, seed=1, names=names, mnist_dir=tmp_path)
    assert [s.name for s in a] == ["letters", "gaussian", "uniform", "inverted", "flipped", "digits"]
    assert [s.name for s in skipped_a] == ["mnist"]
    for s, t in zip(a, b, strict=True):
        assert s.images.shape == (20, 1, 28, 28) and s.images.dtype == np.uint8
        np.testing.assert_array_equal(s.images, t.images)
    letters = a[0].images
    assert letters.max() == 255 and (letters > 0).mean() < 0.5  # white glyph on black


def test_ood_sets_follow_other_input_shapes_and_skip_the_id_source():
    id_imgs = _id_images(30, (3, 8, 8))
    sets, skipped = ood.make_ood_sets("digits", id_imgs, (3, 8, 8), 10, names=("letters", "gaussian", "digits"))
    assert [s.name for s in sets] == ["letters", "gaussian"]
    assert skipped[0].name == "digits"
    assert all(s.images.shape == (10, 3, 8, 8) for s in sets)


def test_letters_fall_back_to_the_builtin_font():
    imgs, src = ood.letter_images(5, seed=0, fonts=[])
    assert imgs.shape == (5, 28, 28) and "built-in" in src and imgs.max() > 0


def test_mnist_set_reads_an_idx_directory(tmp_path):
    import gzip
    import struct

    data = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 3, 28, 28) + data.tobytes())
    imgs, src = ood.mnist_images(5, tmp_path)
    np.testing.assert_array_equal(imgs, data)
    assert "t10k-images" in src


def _features(rng, n, centre, k=3, d=4):
    labels = rng.integers(0, k, n)
    means = np.eye(k, d) * 10 + centre
    z = means[labels] + rng.normal(0, 1, (n, d))
    logits = z[:, :k] * 2
    return ood.Features(logits, z, reliability=rng.random(n)), labels


def test_distance_detectors_separate_far_ood():
    from robustness.metrics import auroc

    rng = np.random.default_rng(0)
    train, labels = _features(rng, 600, 0.0)
    test_id, _ = _features(rng, 200, 0.0)
    test_ood = ood.Features(np.zeros((200, 3)), rng.normal(0, 1, (200, 4)) + np.array([-30, -30, 30, 30]))
    dets = ood.fit_detectors(train, labels, names=("mahalanobis", "knn"), knn_k=5)
    for name, d in dets.items():
        assert auroc(d.score(test_id), d.score(test_ood)) > 0.99, name


def test_logit_detectors_known_values():
    f = ood.Features(np.array([[0.0, 0.0], [10.0, 0.0]]), np.zeros((2, 1)), reliability=np.array([0.2, 0.9]))
    assert ood.MaxSoftmaxDetector().score(f) == pytest.approx([0.5, 1 / (1 + np.exp(-10))])
    assert ood.MaxLogitDetector().score(f) == pytest.approx([0.0, 10.0])
    assert ood.EnergyDetector().score(f) == pytest.approx([np.log(2), 10 + np.log1p(np.exp(-10))])
    assert ood.ReliabilityDetector().score(f) == pytest.approx([0.2, 0.9])
    no_rel = ood.Features(f.logits, f.z)
    assert "reliability" not in ood.fit_detectors(no_rel, np.array([0, 1]), names=("reliability", "energy"))


def test_mahalanobis_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    train, labels = _features(rng, 300, 0.0)
    det = ood.MahalanobisDetector(ridge=0.0).fit(train, labels)
    x = rng.normal(0, 3, (5, 4))
    means = np.stack([train.z[labels == k].mean(0) for k in range(3)])
    c = train.z - means[labels]
    prec = np.linalg.inv(c.T @ c / len(c))
    ref = -np.min([np.einsum("ij,jk,ik->i", x - m, prec, x - m) for m in means], axis=0)
    np.testing.assert_allclose(det.score(ood.Features(np.zeros((5, 3)), x)), ref, rtol=1e-6)
