"""The bench's command line: every default its help states is the value the configuration really gets."""

from __future__ import annotations

import pytest

from robustness.bench_cli import build_parser, config_from_args
from robustness.profiles import BENCH_PROFILES


def _help(option: str) -> str:
    action = next(a for a in build_parser()._actions if option in a.option_strings)
    return " ".join(action.help.split())


def _grid(values) -> str:
    return ",".join(f"{v:g}" for v in values)


@pytest.mark.parametrize("profile", sorted(BENCH_PROFILES))
def test_the_help_states_each_profiles_real_defaults(profile):
    cfg = config_from_args(build_parser().parse_args(["--profile", profile]))
    plan = cfg.adversarial
    stated = {
        "--n-samples": plan.n_cheap,
        "--n-expensive": plan.n_expensive,
        "--n-blackbox": plan.n_blackbox,
        "--n-ood": cfg.n_ood,
        "--n-id": cfg.n_id,
    }
    for option, value in stated.items():
        assert f"{value} {profile}" in _help(option), (option, value, _help(option))
    defaults = _help("--attack-steps").split("; default ", 1)[1].replace("APGD / FAB", "APGD/FAB")
    by_label = dict(
        part.split(" ", 1) for part in defaults.split(", ")
    )  # {"PGD": "20 quick / 50 paper", ...}
    for what, value in (
        ("PGD", plan.budget.pgd_steps),
        ("adaptive", plan.adaptive.steps),
        ("APGD/FAB", plan.budget.apgd_steps),
    ):
        assert f"{value} {profile}" in by_label[what], (what, value, by_label)
    budgets = _help("--profile").split("the bench's budgets: ", 1)[1]
    assert f"{plan.n_cheap} {profile}" in budgets.split("test points ", 1)[1].split(",")[0]
    assert f"{plan.budget.pgd_steps} {profile}" in budgets.split("PGD steps ", 1)[1].split(",")[0]
    assert f"{cfg.n_id}/{cfg.n_ood} {profile}" in budgets.split("ID / OOD points ", 1)[1]


def test_the_help_states_the_plans_real_defaults():
    plan = config_from_args(build_parser().parse_args([])).adversarial
    assert _help("--eps").endswith(f"default {_grid(plan.eps_linf)}")
    assert _help("--eps-l2").endswith(f"default {_grid(plan.eps_l2)}")
    assert f"(default {plan.adaptive_escalations};" in _help("--adaptive-escalations")
    assert "default all but fab_t_linf, fab_t_l2;" in _help("--attacks")
    thorough = config_from_args(build_parser().parse_args(["--thorough"])).adversarial
    assert _help("--thorough").startswith(f">= {thorough.n_cheap} points ({thorough.n_blackbox} black-box)")
    assert f"adaptive {thorough.adaptive.steps} steps x {thorough.adaptive.restarts} restarts" in _help(
        "--thorough"
    )
    assert "fab_t_linf" in thorough.attacks and "fab_t_linf" not in plan.attacks


def test_profile_help_names_both_meanings():
    text = _help("--profile")
    assert "training profile of the runs" in text and "the bench's budgets" in text


def test_fixed_sets_are_validated_in_one_place():
    for argv, what in (
        (["--attacks", "fgsm,nope"], "unknown attacks"),
        (["--ood-sets", "mnist,nope"], "unknown OOD sets"),
        (["--variants", "bin_enc,nope"], "unknown variants"),
    ):
        with pytest.raises(ValueError, match=what):
            config_from_args(build_parser().parse_args(argv), argv)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--profile", "nope"])
