"""OOD sets (local, deterministic, right shape) and detectors (known answers on synthetic features)."""

from __future__ import annotations

import numpy as np
import pytest

from robustness import ood, ood_sets


def _id_images(n=50, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_ood_sets_have_the_models_shape_and_are_deterministic():
    id_imgs = _id_images()
    names = ("letters", "gaussian", "uniform", "inverted", "flipped", "digits", "mnist")
    a, skipped_a = ood_sets.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 20, seed=1, names=names)
    b, _ = ood_sets.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 20, seed=1, names=names)
    assert [s.name for s in a] == list(names) and skipped_a == []
    for s, t in zip(a, b, strict=True):
        assert s.images.shape == (20, 1, 28, 28) and s.images.dtype == np.uint8
        np.testing.assert_array_equal(s.images, t.images)
    letters = a[0].images
    assert letters.max() == 255 and (letters > 0).mean() < 0.5  # white glyph on black
    # A set's points depend on the seed and its name, not on the other sets asked for.
    alone, _ = ood_sets.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 20, seed=1, names=("mnist",))
    np.testing.assert_array_equal(alone[0].images, a[-1].images)


def test_unavailable_named_set_is_an_error_and_a_default_one_is_skipped(tmp_path):
    id_imgs = _id_images()
    with pytest.raises(ood_sets.OODSetError, match=r"'mnist' is not available.*t10k-images"):
        ood_sets.make_ood_sets(
            "fashion-mnist", id_imgs, (1, 28, 28), 5, names=("gaussian", "mnist"), mnist_dir=tmp_path
        )
    sets, skipped = ood_sets.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 5, mnist_dir=tmp_path)
    assert [s.name for s in sets] == [n for n in ood_sets.ALL_SETS if n != "mnist"]
    assert [s.name for s in skipped] == ["mnist"] and "not available" in skipped[0].reason
    with pytest.raises(ood_sets.OODSetError, match="unknown OOD sets"):
        ood_sets.make_ood_sets("fashion-mnist", id_imgs, (1, 28, 28), 5, names=("cifar",))


def test_ood_sets_follow_other_input_shapes_and_skip_the_id_source():
    id_imgs = _id_images(30, (3, 8, 8))
    sets, skipped = ood_sets.make_ood_sets(
        "digits", id_imgs, (3, 8, 8), 10, names=("letters", "gaussian", "digits")
    )
    assert [s.name for s in sets] == ["letters", "gaussian"]
    assert skipped[0].name == "digits"
    assert all(s.images.shape == (10, 3, 8, 8) for s in sets)


def test_letters_fall_back_to_the_builtin_font():
    imgs, src = ood_sets.letter_images(5, seed=0, fonts=[])
    assert imgs.shape == (5, 28, 28) and "built-in" in src and imgs.max() > 0


def test_mnist_set_reads_an_idx_directory(tmp_path):
    import gzip
    import struct

    data = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 3, 28, 28) + data.tobytes())
    imgs, src = ood_sets.mnist_images(5, tmp_path)
    np.testing.assert_array_equal(imgs, data)
    assert "t10k-images" in src


def _features(rng, n, centre, k=3, d=4):
    labels = rng.integers(0, k, n)
    means = np.eye(k, d) * 10 + centre
    z = means[labels] + rng.normal(0, 1, (n, d))
    logits = z[:, :k] * 2
    return ood.Features(logits, z, reliability=rng.random(n)), labels


def test_distance_detectors_separate_far_ood():
    from robustness.detection_metrics import auroc

    rng = np.random.default_rng(0)
    train, labels = _features(rng, 600, 0.0)
    test_id, _ = _features(rng, 200, 0.0)
    test_ood = ood.Features(np.zeros((200, 3)), rng.normal(0, 1, (200, 4)) + np.array([-30, -30, 30, 30]))
    dets = ood.fit_detectors(train, labels, names=("mahalanobis", "knn"), knn_k=5)
    for name, d in dets.items():
        assert auroc(d.score(test_id), d.score(test_ood)) > 0.99, name


def test_logit_detectors_known_values():
    f = ood.Features(np.array([[0.0, 0.0], [10.0, 0.0]]), np.zeros((2, 1)), reliability=np.array([0.2, 0.9]))
    assert ood.MaxSoftmaxDetector().score(f) == pytest.approx(
        [0.0, 10.0]
    )  # logit of p: log 0.5 - log 0.5; 10
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
    prec = np.linalg.inv(c.T @ c / (len(c) - 3))  # pooled within-class covariance, N - K
    ref = -np.min([np.einsum("ij,jk,ik->i", x - m, prec, x - m) for m in means], axis=0)
    np.testing.assert_allclose(det.score(ood.Features(np.zeros((5, 3)), x)), ref, rtol=1e-6)


def test_evaluation_points_are_the_benchs_and_all_points_keep_their_order():
    id_idx, fit_idx = ood.evaluation_points(100, 500, 30, 200, seed=4)
    np.testing.assert_array_equal(id_idx, np.sort(np.random.default_rng(6).permutation(100)[:30]))
    np.testing.assert_array_equal(fit_idx, np.sort(np.random.default_rng(7).permutation(500)[:200]))
    all_id, all_fit = ood.evaluation_points(100, 500, None, 10**6, seed=4)
    np.testing.assert_array_equal(all_id, np.arange(100))
    np.testing.assert_array_equal(all_fit, np.arange(500))


def test_pipeline_features_and_table():
    import torch
    from torch import nn

    from training.score import SoftmaxScore

    class Net(nn.Module):
        def forward(self, x):
            z = x.flatten(1)[:, :4] * 4
            return z[:, :3], z

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    f = ood.model_features(Net(), SoftmaxScore(), images, batch_size=16)
    expected = torch.from_numpy(images.astype(np.float32) / 255).flatten(1)[:, :3] * 4
    np.testing.assert_allclose(f.logits, expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.reliability, torch.softmax(expected, 1).max(1).values.numpy(), rtol=1e-6)
    out = ood.score_outputs(SoftmaxScore(), f.logits, f.z)
    assert set(out) == {
        "logits",
        "nearest_vertex_class",
        "dist_nearest_vertex",
        "dist_predicted_vertex",
        "dist_class_centre",
        "reliability",
    }
    table = ood.ood_table(
        {"d": np.arange(10.0)}, {"far": {"d": np.arange(10.0) - 100}}, roc_points=5, n_boot=10
    )
    row = table["far"]["d"]
    assert (
        row["auroc"] == 1.0 and row["fpr95"] == 0.0 and row["auroc_ci95"] == [1.0, 1.0] and row["roc"]["fpr"]
    )


def _ood_eval_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "ood_eval.py"
    spec = importlib.util.spec_from_file_location("ood_eval", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ood_eval"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_ood_eval_command_is_the_pipeline_and_refuses_a_missing_named_set(
    digits_run, digits_data, tmp_path, capsys
):
    import json

    from serving.artifact import load_artifact
    from training.checkpoint import load_run
    from training.score import score_from_metadata

    ood_eval = _ood_eval_module()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ood_eval.main([str(digits_run), "--ood-sets", "gaussian,mnist", "--ood-data-dir", str(empty)]) == 2
    assert "'mnist' is not available" in capsys.readouterr().err
    out = tmp_path / "report.json"
    args = [
        str(digits_run),
        "--ood-sets",
        "gaussian,flipped",
        "--n-id",
        "150",
        "--n-ood",
        "80",
        "--n-fit",
        "400",
        "--n-boot",
        "5",
        "--shift-n",
        "100",
        "--json",
        str(out),
    ]
    assert ood_eval.main(args) == 0
    report = json.loads(out.read_text())
    assert report["points"]["id_test"] == 150 and report["points"]["fit_train"] == 400
    assert set(report["ood"]) == {"gaussian", "flipped"} and report["selection_val"] and report["acceptance"]
    sel = report["selection_val"]
    assert (
        sel["pick"] in sel["candidates"] and "two thresholds: served and softmax margin" in sel["candidates"]
    )
    acc = report["acceptance"]["bin_enc (vertex_distance)"]
    assert 0.0 <= acc["same_encoding_accepted"] <= 1.0 and 0.0 <= acc["same_encoding_all"] <= 1.0
    # The same numbers straight from robustness.ood (what the bench calls) for the same points.
    art = load_artifact(digits_run / "model.onnx")
    model, score = load_run(digits_run)[0], score_from_metadata(art.metadata)
    id_idx, fit_idx = ood.evaluation_points(len(digits_data.test), len(digits_data.train), 150, 400, 0)
    sets, _ = ood_sets.make_ood_sets(
        "digits", digits_data.test.images, digits_data.input_shape, 80, 0, names=("gaussian", "flipped")
    )
    dets = ood.fit_detectors(
        ood.model_features(model, score, digits_data.train.images[fit_idx]),
        digits_data.train.labels[fit_idx],
        ("reliability", "mahalanobis"),
    )
    s_id = ood.detector_scores(dets, ood.model_features(model, score, digits_data.test.images[id_idx]))
    for s in sets:
        s_ood = ood.detector_scores(dets, ood.model_features(model, score, s.images))
        table = ood.ood_table(s_id, {s.name: s_ood})[s.name]
        got = report["ood"][s.name]
        assert got["reliability, bin_enc (vertex_distance)"]["auroc"] == table["reliability"]["auroc"]
        assert got["mahalanobis, bin_enc (vertex_distance), z 8-d"]["fpr95"] == table["mahalanobis"]["fpr95"]


def test_max_softmax_ranks_confident_points_without_ties():
    from scipy.special import log_softmax

    from robustness.ood import Features, MaxSoftmaxDetector, log_max_softmax

    rng = np.random.default_rng(0)
    small = rng.normal(size=(200, 10))
    log_p, log_rest = log_max_softmax(small)
    ref = log_softmax(small, axis=1).max(axis=1)
    np.testing.assert_allclose(log_p, ref, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_rest), 1 - np.exp(ref), rtol=1e-9)
    det = MaxSoftmaxDetector()
    assert (np.argsort(det.score(Features(small, small, None))) == np.argsort(ref)).all()
    # margins of 20..60: p rounds to 1 in float32 and float64 alike, the detector still orders every point
    big = np.zeros((5, 10), np.float32)
    big[:, 3] = [20, 30, 40, 50, 60]
    assert (np.exp(log_max_softmax(big)[0]) == 1.0).sum() >= 2
    s = det.score(Features(big, big, None))
    assert (np.diff(s) > 0).all()
