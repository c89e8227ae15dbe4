"""Risk-controlled thresholds: the exact binomial bound, the fixed-sequence test, and the guarantee checked by
simulation (many calibration draws from a known distribution) against a deliberately broken bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from training.selective_risk import (
    accepted_counts,
    certify,
    clopper_pearson_upper,
    empirical_risk,
    split_validation,
    threshold_grid,
)

# The known distribution: score s ~ U(0, 1), P(wrong | s) = C * (1 - s)^2, so the selective risk of
# "accept iff s >= tau" is R(tau) = C * (1 - tau)^2 / 3 (10% errors overall, 5% among the top 71%).
C = 0.3
ALPHA, DELTA = 0.05, 0.1
DRAWS, N_VAL = 600, 3000
SLACK = 3 * np.sqrt(DELTA * (1 - DELTA) / DRAWS)  # three binomial standard errors of the violation rate


def true_risk(tau: float) -> float:
    return C * (1 - tau) ** 2 / 3


def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    s = rng.random(n)
    return s, rng.random(n) < C * (1 - s) ** 2


def violation_rate(upper_bound, seed: int = 0) -> tuple[float, float]:
    """Share of calibration draws whose certified threshold has a true risk above ALPHA, and the mean coverage."""
    rng = np.random.default_rng(seed)
    sel, cal = split_validation(N_VAL)
    violations, coverage = 0, []
    for _ in range(DRAWS):
        s, wrong = draw(rng, N_VAL)
        cert = certify(s[sel], wrong[sel], s[cal], wrong[cal], ALPHA, DELTA, upper_bound)
        if cert.index is not None:
            violations += true_risk(cert.threshold) > ALPHA
            coverage.append(1 - cert.threshold)
    return violations / DRAWS, float(np.mean(coverage))


def test_clopper_pearson_matches_scipy_exact_interval_and_the_binomial_test():
    for k, n in [(0, 50), (3, 200), (40, 400), (190, 200)]:
        u = float(clopper_pearson_upper(k, n, 0.05))
        # one-sided 95% upper bound = upper end of the two-sided exact 90% interval
        assert u == pytest.approx(binomtest(k, n).proportion_ci(0.90, method="exact").high, rel=1e-9)
        assert binom.cdf(k, n, u) == pytest.approx(0.05, rel=1e-6)  # p-value exactly delta at the bound
        assert binom.cdf(k, n, u + 1e-3) < 0.05 < binom.cdf(k, n, u - 1e-3)
    assert float(clopper_pearson_upper(0, 100, 0.05)) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert float(clopper_pearson_upper(0, 0, 0.05)) == 1.0 and float(clopper_pearson_upper(5, 5, 0.05)) == 1.0


def test_accepted_counts_match_brute_force():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 20, 500) / 20.0  # many ties
    wrong = rng.random(500) < 0.3
    grid = threshold_grid(s)
    assert np.all(np.diff(grid) < 0) and grid[-1] == 0.0  # most conservative first, ends accepting everything
    n, k = accepted_counts(s, wrong, grid)
    for tau, n_j, k_j in zip(grid, n, k, strict=True):
        assert n_j == np.sum(s >= tau) and k_j == np.sum(wrong[s >= tau])


def test_split_is_disjoint_complete_and_fixed():
    sel, cal = split_validation(6000)
    assert len(sel) == 2000 and len(cal) == 4000
    assert not set(sel) & set(cal) and set(sel) | set(cal) == set(range(6000))
    np.testing.assert_array_equal(split_validation(6000)[0], sel)


def test_certified_threshold_is_the_last_of_the_unbroken_run():
    rng = np.random.default_rng(2)
    s, wrong = draw(rng, N_VAL)
    sel, cal = split_validation(N_VAL)
    cert = certify(s[sel], wrong[sel], s[cal], wrong[cal], ALPHA, DELTA)
    assert cert.index is not None and cert.index >= cert.start
    assert np.all(cert.bounds[cert.start : cert.index + 1] <= ALPHA)
    assert cert.index == len(cert.grid) - 1 or cert.bounds[cert.index + 1] > ALPHA
    assert cert.bounds[cert.index] == pytest.approx(
        float(clopper_pearson_upper(cert.n_wrong[cert.index], cert.n_accepted[cert.index], DELTA))
    )


def test_below_the_smallest_certifiable_risk_nothing_is_certified_and_at_it_something_is():
    rng = np.random.default_rng(3)
    s, wrong = draw(rng, N_VAL)
    sel, cal = split_validation(N_VAL)
    low = certify(s[sel], wrong[sel], s[cal], wrong[cal], 0.001, DELTA)
    assert low.index is None and low.threshold is None
    at = certify(s[sel], wrong[sel], s[cal], wrong[cal], low.smallest_certifiable, DELTA)
    assert at.index is not None
    with pytest.raises(ValueError, match="ALPHA"):
        certify(s[sel], wrong[sel], s[cal], wrong[cal], 1.5, DELTA)


def test_guarantee_holds_over_many_calibration_draws_and_a_broken_bound_fails_the_same_check():
    """P(R(tau_hat) > ALPHA) <= DELTA over the calibration draw; the empirical risk used as the bound breaks it."""
    rate, coverage = violation_rate(clopper_pearson_upper)
    broken, broken_coverage = violation_rate(empirical_risk)
    print(
        f"violation rate {rate:.3f} (coverage {coverage:.3f}); empirical risk as the bound: {broken:.3f} "
        f"(coverage {broken_coverage:.3f}); delta {DELTA} + slack {SLACK:.3f}"
    )
    assert rate <= DELTA + SLACK, f"violation rate {rate:.3f} > delta {DELTA} + slack {SLACK:.3f}"
    assert coverage > 0.55  # not vacuous: the oracle threshold (R = ALPHA) accepts 71%
    assert broken > DELTA + SLACK, f"the broken bound passed: violation rate {broken:.3f}"


def test_alpha_is_chosen_from_the_selection_part_alone():
    from training.selective_risk import choose_alpha, sequence_start

    assert choose_alpha([0.03, 0.01, 0.02], 0.012) == 0.02
    assert choose_alpha([0.01, 0.02], 0.005) == 0.01 and choose_alpha([0.01, 0.02], 0.5) == 0.02
    rng = np.random.default_rng(4)
    s, wrong = draw(rng, N_VAL)
    sel, cal = split_validation(N_VAL)
    grid, start, bound = sequence_start(s[sel], wrong[sel], DELTA)
    cert = certify(s[sel], wrong[sel], s[cal], wrong[cal], ALPHA, DELTA)
    assert cert.start == start and cert.selection_bound == bound and np.array_equal(cert.grid, grid)
    shuffled = wrong[cal][rng.permutation(len(cal))]  # the calibration labels play no part in the start
    assert certify(s[sel], wrong[sel], s[cal], shuffled, ALPHA, DELTA).start == start
