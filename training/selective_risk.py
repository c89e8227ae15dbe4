"""Risk-controlled acceptance: the most permissive threshold whose selective error is certified ``<= alpha``.

Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test: Calibrating predictive algorithms to
achieve risk control", arXiv:2110.01052, 2021), fixed-sequence variant:

* the rules are ``accept iff reliability >= tau_j``, thresholds ordered from the most conservative to the most
  permissive; the selective risk ``R(tau) = P(wrong | accepted)`` is the error rate among accepted answers;
* each ``tau_j`` is a null hypothesis ``H_j: R(tau_j) > alpha`` with an exact binomial p-value: for exchangeable
  calibration points, given that ``n_j`` of them are accepted, the errors among them are Binomial(n_j, R(tau_j)),
  so ``p_j = P(Binomial(n_j, alpha) <= k_j)`` (``k_j`` errors observed). ``p_j <= delta`` exactly when the one-sided
  Clopper-Pearson upper ``1 - delta`` bound of ``k_j / n_j`` is ``<= alpha`` (:func:`clopper_pearson_upper`);
* fixed-sequence testing rejects ``H_start, H_start+1, ...`` while ``p_j <= delta`` and stops at the first failure;
  it controls the family-wise error at ``delta``, so the most permissive rejected threshold ``tau_hat`` has
  ``P(R(tau_hat) > alpha) <= delta`` over the draw of the calibration set.

The threshold grid and the start of the sequence must not depend on the calibration points: they are read from a
separate *selection* part (:func:`split_validation`): the grid is its reliability quantiles at accept fractions
:data:`GRID_ACCEPT` (plus 0, accept everything), and the sequence starts at the grid point with the smallest
Clopper-Pearson bound on the selection part (the one most likely to pass). When the model itself was chosen among
``K`` candidates with the same validation data, each candidate is certified at ``delta / K`` (Bonferroni): the
union bound makes the guarantee hold whichever candidate the choice picked.

What it does not cover: inputs unlike the calibration data (distribution shift, adversarial inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from training.calibration import calibrate_threshold

METHOD = (
    "Learn then Test, fixed-sequence testing over thresholds from the most conservative to the most permissive, "
    "exact binomial (Clopper-Pearson) p-values (Angelopoulos et al. 2021, arXiv:2110.01052)"
)
SELECTION_SHARE = 1 / 3  # of the validation split: grid and start of the sequence; the rest certifies
SPLIT_SEED = 0
GRID_ACCEPT = np.round(
    np.arange(0.005, 1.0, 0.005), 3
)  # accept fractions of the selection part (then 0 = all)

UpperBound = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


class RiskNotCertifiable(ValueError):
    """No threshold of the family is certified at the requested risk; nothing is exported."""


def clopper_pearson_upper(errors: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """One-sided exact upper ``1 - delta`` confidence bound of a binomial proportion ``errors / n`` (1 where n = 0).

    ``P(Binomial(n, b) <= errors) = delta`` at the bound ``b``: the ``1 - delta`` quantile of Beta(errors + 1,
    n - errors) (1 when errors = n).
    """
    k, n = np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = beta.ppf(1.0 - delta, k + 1.0, n - k)
    return np.where((n <= 0) | (k >= n), 1.0, b)


def empirical_risk(errors: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """The observed error rate used *as if* it were a bound: no guarantee (the tests' broken control)."""
    k, n = np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64)
    return np.where(n > 0, k / np.maximum(n, 1.0), 1.0)


def split_validation(
    n: int, share: float = SELECTION_SHARE, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``(selection, calibration)`` indices of an ``n``-point validation split: a seeded permutation, fixed before
    any calibration figure is computed; the first ``ceil(share * n)`` select, the rest certify."""
    if n < 2:
        raise ValueError(f"risk control needs a validation split of at least 2 points, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    m = min(max(int(np.ceil(share * n)), 1), n - 1)
    return np.sort(perm[:m]), np.sort(perm[m:])


def threshold_grid(selection_scores: np.ndarray) -> np.ndarray:
    """Thresholds from the most conservative to the most permissive: the selection part's reliability at accept
    fractions :data:`GRID_ACCEPT` (:func:`training.calibration.calibrate_threshold`), duplicates dropped, then 0."""
    taus = calibrate_threshold(selection_scores, GRID_ACCEPT)
    return np.unique(np.append(taus, 0.0))[::-1]


def accepted_counts(scores: np.ndarray, wrong: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(accepted, wrong among accepted)`` at each threshold of ``grid`` (``scores >= tau``)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.asarray(wrong, dtype=bool).reshape(-1)
    order = np.argsort(-s, kind="stable")
    s_desc, cum_wrong = s[order], np.concatenate([[0], np.cumsum(w[order])])
    n_acc = np.searchsorted(-s_desc, -np.asarray(grid, dtype=np.float64), side="right")
    return n_acc, cum_wrong[n_acc]


@dataclass(frozen=True)
class Certificate:
    """The outcome of :func:`certify` (``index`` is None when nothing is certified)."""

    alpha: float
    delta: float  # per candidate (the caller's delta / candidates)
    grid: np.ndarray
    start: int
    n_accepted: np.ndarray  # calibration points accepted at each grid threshold
    n_wrong: np.ndarray
    bounds: np.ndarray  # upper bound of the selective risk at each grid threshold (calibration part)
    index: int | None
    n_calibration: int
    selection_bound: (
        float  # the smallest Clopper-Pearson bound on the selection part (where the sequence starts)
    )

    @property
    def threshold(self) -> float | None:
        return None if self.index is None else float(self.grid[self.index])

    @property
    def smallest_certifiable(self) -> float:
        """The smallest alpha this sequence certifies anything at: the bound at its start."""
        return float(self.bounds[self.start])

    @property
    def tested(self) -> int:
        """Hypotheses tested (rejections plus the failure that stopped the sequence, if any)."""
        stop = self.start if self.index is None else self.index + 1
        return min(stop + 1, len(self.grid)) - self.start


def sequence_start(
    sel_scores: np.ndarray, sel_wrong: np.ndarray, delta: float
) -> tuple[np.ndarray, int, float]:
    """``(grid, start, bound)`` from the selection part alone: the threshold grid, the index where the sequence
    starts (the smallest Clopper-Pearson bound on the selection points) and that bound."""
    grid = threshold_grid(sel_scores)
    n_sel, k_sel = accepted_counts(sel_scores, sel_wrong, grid)
    bounds = clopper_pearson_upper(k_sel, n_sel, delta)
    start = int(np.argmin(bounds))
    return grid, start, float(bounds[start])


def choose_alpha(alphas: list[float], selection_bound: float) -> float:
    """The smallest of ``alphas`` at or above the selection part's smallest certifiable risk (the largest when none
    is): a choice of ALPHA that never looks at the calibration points."""
    ok = [a for a in sorted(alphas) if a >= selection_bound]
    return ok[0] if ok else max(alphas)


def certify(
    sel_scores: np.ndarray,
    sel_wrong: np.ndarray,
    cal_scores: np.ndarray,
    cal_wrong: np.ndarray,
    alpha: float,
    delta: float,
    upper_bound: UpperBound = clopper_pearson_upper,
) -> Certificate:
    """Fixed-sequence test of ``R(tau_j) <= alpha`` on the calibration part, grid and start from the selection part.

    ``wrong``: the prediction is an error (bool per point); ``delta``: the level of this one test (already divided
    by the number of candidate models, if any); ``upper_bound``: the bound each test compares with ``alpha``
    (Clopper-Pearson; the tests swap in a broken one to show the check catches it).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"expected a target risk ALPHA in (0, 1), got {alpha}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"expected DELTA in (0, 1), got {delta}")
    grid, start, selection_bound = sequence_start(sel_scores, sel_wrong, delta)
    n_cal, k_cal = accepted_counts(cal_scores, cal_wrong, grid)
    bounds = np.asarray(upper_bound(k_cal, n_cal, delta), dtype=np.float64)
    index = None
    for j in range(start, len(grid)):
        if not bounds[j] <= alpha:
            break
        index = j
    return Certificate(
        alpha, delta, grid, start, n_cal, k_cal, bounds, index, int(np.size(cal_scores)), selection_bound
    )


def risk_summary(cert: Certificate, alpha: float, delta: float, candidates: int, n_selection: int) -> dict:
    """The artifact's ``acceptance`` block for a certified threshold (JSON-ready)."""
    j = cert.index
    assert j is not None
    n_cal = cert.n_calibration
    return {
        "mode": "risk",
        "alpha": alpha,
        "delta": delta,
        "candidates": candidates,
        "delta_per_candidate": cert.delta,
        "statement": (
            f"P(selective error > {alpha:g}) <= {delta:g} over the draw of the calibration set: of the "
            f"answers accepted on data exchangeable with the calibration split, at most {100 * alpha:g}% are "
            f"wrong, with confidence {100 * (1 - delta):g}%"
            + (
                f" (Bonferroni over the {candidates} candidate models the validation split chose among)"
                if candidates > 1
                else ""
            )
        ),
        "method": METHOD,
        "threshold": float(cert.grid[j]),
        "calibration_n": n_cal,
        "calibration_accepted": int(cert.n_accepted[j]),
        "calibration_errors_accepted": int(cert.n_wrong[j]),
        "calibration_coverage": float(cert.n_accepted[j] / n_cal),
        "calibration_selective_risk": float(cert.n_wrong[j] / max(int(cert.n_accepted[j]), 1)),
        "upper_bound_at_threshold": float(cert.bounds[j]),
        "smallest_certifiable_risk": cert.smallest_certifiable,
        "selection_smallest_certifiable_risk": cert.selection_bound,
        "selection_n": n_selection,
        "split": (
            f"validation split, seeded permutation (seed {SPLIT_SEED}): {n_selection} points choose the threshold "
            "grid, the start of the sequence and ALPHA when several are given; the other points certify"
        ),
        "hypotheses_tested": cert.tested,
        "covers": "exchangeable data like the calibration split; not distribution shift, not adversarial inputs",
    }
