"""Score selection on validation data: validation shifts, the softmax margin and the two-threshold rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from robustness.detection_metrics import auroc
from robustness.ood import Features
from robustness.selection import (
    MARGIN,
    MARGIN_SHARES,
    SERVED,
    TWO_THRESHOLDS,
    candidate_scores,
    ecdf,
    pick,
    selection_table,
    two_threshold_name,
    two_threshold_scores,
    validation_shifts,
    with_two_thresholds,
)


def test_validation_shifts_are_uint8_images_of_the_same_shape_and_differ_from_the_originals():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 1, 8, 8), dtype=np.uint8)
    shifts = validation_shifts(images, n=20, seed=1)
    assert set(shifts) == {"noise", "invert", "rot90", "shuffle"}
    for name, x in shifts.items():
        assert x.dtype == np.uint8 and x.shape == (20, 1, 8, 8), name
        assert not np.array_equal(x, images[:20]), name
    # The shuffle permutes each image's pixels: same multiset of values per image.
    np.testing.assert_array_equal(
        np.sort(shifts["shuffle"].reshape(20, -1), 1), np.sort(images[:20].reshape(20, -1), 1)
    )
    assert "rot90" not in validation_shifts(rng.integers(0, 256, size=(5, 1, 8, 6), dtype=np.uint8))


def test_softmax_margin_ranks_like_top1_minus_top2_and_has_no_ties_where_p1_rounds_to_1():
    logits = np.array(
        [[2.0, 0.0, 0.0], [1.0, 1.0, -3.0], [0.0, 50.0, 0.0], [0.5, -1.0, 2.0]], dtype=np.float32
    )
    c = candidate_scores(Features(logits, np.zeros((4, 2), np.float32)), None)
    top = np.sort(softmax(logits.astype(np.float64), axis=1), 1)
    margin = top[:, -1] - top[:, -2]
    np.testing.assert_allclose(1 - np.exp(-c[MARGIN]), margin, rtol=1e-9, atol=1e-15)
    assert c[MARGIN][1] == pytest.approx(0.0, abs=1e-12)
    assert set(c) == {"max_softmax", MARGIN}  # no vertex score without a VertexScore
    assert with_two_thresholds(c, c) is c
    # top-1 leads by 40..80: the margin is exactly 1 in float64 on every row, the score still orders them,
    # also when the runner-up moves while the lead over the rest stays
    big = np.zeros((6, 10))
    big[:5, 3] = [40, 50, 60, 70, 80]
    big[5, 3], big[5, 4] = 80, 5
    assert (np.diff(np.sort(softmax(big, axis=1), 1)[:, -2:], axis=1) == 1.0).sum() >= 5
    s = candidate_scores(Features(big, np.zeros((6, 2))), None)[MARGIN]
    assert (np.diff(s[:5]) > 0).all() and s[5] < s[4]
    rng = np.random.default_rng(0)
    small = rng.normal(scale=3, size=(300, 10))
    p = np.sort(softmax(small, axis=1), 1)
    s = candidate_scores(Features(small, np.zeros((300, 2))), None)[MARGIN]
    assert (np.argsort(s, kind="stable") == np.argsort(p[:, -1] - p[:, -2], kind="stable")).all()


@pytest.mark.parametrize("q", [0.05, 0.1, 0.5, 0.93])
def test_two_threshold_score_thresholded_at_q_is_the_rule_with_both_thresholds_at_the_reference_q_quantile(q):
    rng = np.random.default_rng(3)
    ref = {SERVED: rng.normal(size=200), MARGIN: rng.uniform(size=200)}
    x = {SERVED: rng.normal(size=500), MARGIN: rng.uniform(size=500)}
    s = two_threshold_scores(x, ref)
    k = int(np.ceil(q * 200))  # ECDF >= q  <=>  value >= the k-th smallest reference value
    t_a, t_b = np.sort(ref[SERVED])[k - 1], np.sort(ref[MARGIN])[k - 1]
    np.testing.assert_array_equal(s >= q, (x[SERVED] >= t_a) & (x[MARGIN] >= t_b))
    np.testing.assert_array_equal(ecdf(ref[SERVED], np.sort(ref[SERVED])), np.arange(1, 201) / 200)


def test_two_thresholds_catch_what_either_score_alone_misses():
    """Half the outliers look normal to one score, half to the other: each alone is near chance on its blind half,
    the two-threshold rule rejects both halves."""
    rng = np.random.default_rng(0)
    n = 2000
    inl = {SERVED: rng.normal(size=n), MARGIN: rng.normal(size=n)}
    ref = {k: rng.normal(size=n) for k in inl}
    half = n // 2
    out = {
        SERVED: np.r_[rng.normal(-3, 1, half), rng.normal(size=half)],
        MARGIN: np.r_[rng.normal(size=half), rng.normal(-3, 1, half)],
    }
    both = auroc(two_threshold_scores(inl, ref), two_threshold_scores(out, ref))
    singles = [auroc(inl[k], out[k]) for k in inl]
    assert max(singles) < 0.78 and both > max(singles) + 0.1
    assert TWO_THRESHOLDS not in with_two_thresholds({MARGIN: inl[MARGIN]}, ref)


def test_pick_takes_the_best_misclassification_detector_that_loses_no_shift():
    served = {"val_misclf": 0.90, "val_vs_noise": 0.98, "val_vs_rot90": 0.80}
    table = {
        SERVED: served,
        "better misclf, loses one shift": {"val_misclf": 0.95, "val_vs_noise": 0.99, "val_vs_rot90": 0.79},
        "better misclf, keeps every shift": {"val_misclf": 0.92, "val_vs_noise": 0.98, "val_vs_rot90": 0.81},
        "worse misclf, better shifts": {"val_misclf": 0.85, "val_vs_noise": 1.0, "val_vs_rot90": 0.9},
    }
    assert pick(table) == "better misclf, keeps every shift"
    assert pick(table, tolerance=0.01) == "better misclf, loses one shift"
    del table["better misclf, keeps every shift"]
    assert pick(table) == SERVED  # nothing else both detects errors better and keeps every shift


def test_a_lighter_margin_share_rejects_fewer_on_the_margin():
    rng = np.random.default_rng(1)
    ref = {SERVED: rng.normal(size=500), MARGIN: rng.normal(size=500)}
    x = {SERVED: rng.normal(size=2000), MARGIN: rng.normal(size=2000)}
    q = 0.2
    rejected = {s: (two_threshold_scores(x, ref, share=s) < q).mean() for s in MARGIN_SHARES}
    assert (
        rejected[1.0]
        > rejected[0.5]
        > rejected[0.25]
        > (x[SERVED] < np.quantile(ref[SERVED], q)).mean() - 0.03
    )
    names = set(with_two_thresholds(x, ref)) - set(x)
    assert names == {two_threshold_name(s) for s in MARGIN_SHARES} and len(names) == len(MARGIN_SHARES)


def test_selection_table_scores_each_candidate_on_validation_errors_and_shifts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), labels] += np.where(
        np.arange(400) < 300, 6.0, -1.0
    )  # the last 100 mostly wrong, flat
    val = Features(logits, np.zeros((400, 2)))
    flat = Features(
        rng.normal(scale=0.5, size=(200, 5)), np.zeros((200, 2))
    )  # a shift the model is unsure of
    table = selection_table(val, labels, {"flat": flat}, None)
    assert set(table) == {"max_softmax", MARGIN} and set(table["max_softmax"]) == {
        "val_misclf",
        "val_vs_flat",
    }
    for row in table.values():
        assert row["val_misclf"] > 0.9 and row["val_vs_flat"] > 0.8
    # A caller that already holds the validation candidates gets the same table without recomputing them.
    assert selection_table(val, labels, {"flat": flat}, None, reference=candidate_scores(val, None)) == table
