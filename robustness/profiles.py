"""The bench's budget profiles (``--profile``) and what ``--thorough`` adds on top of one."""

from __future__ import annotations

from typing import Literal, get_args

from robustness.adaptive import AdaptiveBudget
from robustness.attacks import ALL_ATTACKS, AttackBudget

# --profile: the training profile of the runs (training.config.PROFILES) and the bench's budgets (BENCH_PROFILES)
Profile = Literal["quick", "paper"]

# Default (aimed at 10 minutes for 4 cached models + the ablation row on 2 CPU cores; measured: 687 s, see
# docs/robustness.md "Cost"): 100 points
# for every white-box attack, Square with 1000 queries (5000 in thorough mode), no FAB-T (thorough mode runs it),
# the AutoAttack components at the headline ε, the adaptive attack from 30 steps x 1 restart (its convergence check
# doubles steps and restarts on the unbroken points until the figure stops moving).
QUICK_BUDGET = AttackBudget(square_queries=1000)
BENCH_PROFILES = {
    "quick": dict(
        n_id=2000,
        n_ood=1000,
        n_fit=5000,
        adversarial=dict(
            n_cheap=100,
            n_expensive=100,
            n_blackbox=20,
            budget=QUICK_BUDGET,
            adaptive=AdaptiveBudget(steps=30, restarts=1),
        ),
    ),
    # GPU: more points and bigger budgets.
    "paper": dict(
        n_id=10000,
        n_ood=5000,
        n_fit=20000,
        adversarial=dict(
            n_cheap=2000,
            n_expensive=500,
            n_blackbox=50,
            adaptive=AdaptiveBudget(steps=50, restarts=2),
            budget=AttackBudget(
                pgd_steps=50,
                pgd_restarts=2,
                cw_binary_steps=9,
                cw_steps=100,
                cw_stepsize=0.01,
                fmn_steps=200,
                hsj_steps=40,
                hsj_initial_evals=100,
                hsj_max_evals=2000,
            ),
        ),
    ),
}
assert set(BENCH_PROFILES) == set(get_args(Profile))
# --thorough on top of a profile: >= 1000 points everywhere, every seed, full ε grids for the AutoAttack components
# and the adaptive attack, Square with 5000 queries, adaptive 50 steps x 2 restarts (its check 100 x 4).
THOROUGH = dict(
    n_cheap=1000,
    n_expensive=1000,
    n_blackbox=100,
    adaptive_eps_linf=(),
    adaptive_eps_l2=(),
    ensemble_eps_linf=(),
    ensemble_eps_l2=(),
    adaptive=AdaptiveBudget(steps=50, restarts=2),
    attacks=ALL_ATTACKS,
)
THOROUGH_SQUARE_QUERIES = 5000
