"""robustness.detection_metrics against sklearn and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from robustness import detection_metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_auroc_matches_sklearn_with_ties(rng):
    pos = np.round(rng.normal(1, 1, 300), 1)
    neg = np.round(rng.normal(0, 1, 200), 1)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert M.auroc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))


@pytest.mark.parametrize(
    ("pos", "neg", "expected"),
    [([2, 3, 4], [0, 1], 1.0), ([0, 1], [2, 3, 4], 0.0), ([1, 1, 1], [1, 1], 0.5), ([1, 2], [1, 2], 0.5)],
)
def test_auroc_known_answers(pos, neg, expected):
    assert M.auroc(pos, neg) == pytest.approx(expected)


def test_degenerate_inputs_are_nan_not_errors():
    assert np.isnan(M.auroc([], [1, 2]))
    assert np.isnan(M.fpr_at_tpr([1.0], []))
    assert np.isnan(M.aupr([], [1]))
    assert np.isnan(M.misclassification_auroc([0.9, 0.8], [True, True]))
    assert np.isnan(M.ece([], []))
    assert np.isnan(M.aurc([], []))


def _fpr_at_tpr_sklearn(pos, neg, tpr=0.95):
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, t, _ = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    return fpr[t >= tpr - 1e-12].min()


def test_fpr95_is_the_smallest_roc_fpr_with_tpr_at_least_95(rng):
    for trial in range(5):
        pos = np.round(rng.normal(1, 1, 401), trial % 3)
        neg = np.round(rng.normal(0, 1, 333), trial % 3)
        assert M.fpr_at_tpr(pos, neg) == pytest.approx(_fpr_at_tpr_sklearn(pos, neg))
        th = M.threshold_at_tpr(pos)
        assert np.mean(pos >= th) >= 0.95


def test_fpr95_known_answers():
    assert M.fpr_at_tpr(np.arange(100) + 100, np.arange(100)) == 0.0
    assert M.fpr_at_tpr(np.arange(100), np.arange(100) + 1000) == 1.0


def test_threshold_agrees_with_the_artifacts_calibration(rng):
    from training.calibration import calibrate_threshold

    r = rng.random(1000)
    assert M.threshold_at_tpr(r, 0.95) == calibrate_threshold(r, 0.95)
    assert np.isnan(M.threshold_at_tpr([], 0.95))


def test_bootstrap_interval_brackets_the_point_and_shrinks_with_n(rng):
    small = M.bootstrap_interval(rng.normal(1, 1, 100), rng.normal(0, 1, 100), n_boot=200, seed=0)
    big_pos, big_neg = rng.normal(1, 1, 3000), rng.normal(0, 1, 3000)
    big = M.bootstrap_interval(big_pos, big_neg, n_boot=200, seed=0)
    assert big[0] < M.auroc(big_pos, big_neg) < big[1]
    assert big[1] - big[0] < small[1] - small[0]
    assert big == M.bootstrap_interval(big_pos, big_neg, n_boot=200, seed=0)  # seeded
    lo, hi = M.bootstrap_interval(big_pos, big_neg, M.fpr_at_tpr, n_boot=50)
    assert 0 <= lo <= M.fpr_at_tpr(big_pos, big_neg) <= hi <= 1
    assert all(np.isnan(M.bootstrap_interval([], [1.0]))) and all(
        np.isnan(M.bootstrap_interval([1.0], [0.0], n_boot=0))
    )


def test_aupr_in_and_out_match_sklearn(rng):
    sid, sood = rng.normal(1, 1, 250), rng.normal(0, 1, 150)
    out = M.ood_metrics(sid, sood)
    y_in = np.r_[np.ones(250), np.zeros(150)]
    assert out["aupr_in"] == pytest.approx(average_precision_score(y_in, np.r_[sid, sood]))
    assert out["aupr_out"] == pytest.approx(average_precision_score(1 - y_in, -np.r_[sid, sood]))
    assert out["auroc"] == pytest.approx(roc_auc_score(y_in, np.r_[sid, sood]))
    perfect = M.ood_metrics([5, 6, 7], [0, 1])
    assert perfect == {"auroc": 1.0, "fpr95": 0.0, "aupr_in": 1.0, "aupr_out": 1.0}


def test_ece_known_answers(rng):
    assert M.ece(np.full(10, 0.8), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)
    assert M.ece(np.ones(5), np.zeros(5)) == pytest.approx(1.0)
    assert M.ece(np.zeros(5), np.ones(5)) == pytest.approx(1.0)
    conf = rng.random(500)
    corr = rng.random(500) < conf
    bins = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    ref = (
        sum(
            abs(corr[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum()
            for b in range(15)
            if (bins == b).any()
        )
        / 500
    )
    assert M.ece(conf, corr) == pytest.approx(ref)


def test_aurc_known_answers(rng):
    assert M.aurc(rng.random(50), np.ones(50, bool)) == 0.0
    assert M.aurc(rng.random(50), np.zeros(50, bool)) == 1.0
    correct = np.array([1, 1, 1, 0], bool)
    # perfect ranking: risk 0, 0, 0, 1/4 -> mean 1/16
    assert M.aurc(np.array([4, 3, 2, 1.0]), correct) == pytest.approx(1 / 16)
    assert M.optimal_aurc(correct) == pytest.approx(1 / 16)
    # worst ranking: risk 1, 1/2, 1/3, 1/4
    assert M.aurc(np.array([1, 2, 3, 4.0]), correct) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # a constant score: every coverage has the overall error rate
    assert M.aurc(np.ones(4), correct) == pytest.approx(0.25)


def test_aurc_does_not_depend_on_tie_order(rng):
    s = np.round(rng.random(200), 1)
    c = rng.random(200) < 0.7
    perm = rng.permutation(200)
    assert M.aurc(s, c) == pytest.approx(M.aurc(s[perm], c[perm]))
    cov, risk = M.risk_coverage(s, c)
    assert cov[-1] == 1.0 and risk[-1] == pytest.approx(1 - c.mean())


def test_misclassification_auroc_and_selective_metrics():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    correct = np.array([1, 1, 1, 0, 0], bool)
    assert M.misclassification_auroc(scores, correct) == 1.0
    assert M.misclassification_auroc(-scores, correct) == 0.0
    sm = M.selective_metrics(scores, correct)
    assert sm["e_aurc"] == pytest.approx(0.0)
    assert len(sm["risk_coverage"]["coverage"]) == 5
