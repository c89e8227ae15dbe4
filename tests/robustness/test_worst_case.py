"""The worst case over the attacks that ran (robustness.adversarial.records) on hand-made masks."""

from __future__ import annotations

import numpy as np

from robustness.adversarial import Record, envelope, robust_points, worst_case

EPS = [0.0, 0.05, 0.1]


def test_worst_case_is_any_over_the_records_of_a_norm_with_the_envelope():
    a = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], bool)
    b = np.array([[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], bool)
    other_norm = Record("l2 attack", "l2", np.ones((3, 4), bool))
    mask, names = worst_case([Record("a", "linf", a), Record("b", "linf", b), other_norm], "linf", EPS, 4)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(
        mask, [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    )  # a's ε=0.05 success carries
    short, _ = worst_case(
        [Record("few points", "linf", a[:, :2])], "linf", EPS, 4
    )  # a shorter tier: not attacked
    np.testing.assert_array_equal(short[:, 2:], np.zeros((3, 2), bool))


def test_worst_case_for_a_reject_option_folds_only_the_records_that_checked_it():
    fooled = np.array([[0, 0], [0, 1], [0, 1]], bool)
    recs = [
        Record("a", "linf", np.ones((3, 2), bool), {"vertex": fooled}),
        Record("b", "linf", np.ones((3, 2), bool)),
    ]
    mask, names = worst_case(recs, "linf", EPS, 2, option="vertex")
    assert names == ["a"]
    np.testing.assert_array_equal(mask, fooled)


def test_robust_points_count_clean_errors_as_failures():
    clean = np.array([1, 1, 1, 0], bool)
    broken = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], bool)
    np.testing.assert_allclose(robust_points(clean, broken).mean(axis=1), [0.75, 0.5, 0.0])


def test_envelope_carries_adversarials_to_larger_eps():
    mask = np.array([[0, 1], [1, 0], [0, 0]], bool)  # eps order 0.1, 0.05, 0.2
    env = envelope(mask, [0.1, 0.05, 0.2])
    np.testing.assert_array_equal(env, [[1, 1], [1, 0], [1, 1]])
