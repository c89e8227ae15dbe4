"""The checks of one model's adversarial evaluation (:mod:`robustness.sanity` turns them into flags): gradient
norms, CE/margin gaps, large-ε probes, monotone curves, single step vs iterative, black-box vs white-box and the
AutoAttack components' gain."""

from __future__ import annotations

import numpy as np

from robustness import sanity
from robustness.adversarial.plan import NORMS
from robustness.adversarial.records import (
    Context,
    Record,
    envelope,
    fit_to_tier,
    robust_points,
    seed_for,
    worst_case,
)
from robustness.attacks import get_spec, input_gradient_norms, run_attack


def _full_grid(ctx: Context, rec: Record) -> bool:
    return rec.name in ctx.plan.attacks and not get_spec(rec.name).residual


def run_checks(ctx: Context) -> None:
    """Gradient norms, CE/margin gaps, large-ε probes, monotone curves, single step, black-box, AutoAttack gain."""
    cfg, rows_c = ctx.plan.sanity, ctx.sample.rows("cheap")
    ctx.tick("checks")
    x, y = ctx.sample.take(np.flatnonzero(rows_c))
    norms = input_gradient_norms(ctx.net, x, y)
    ctx.flags.append(sanity.gradient_norms(norms, cfg))
    by_name = {r.name: r for r in ctx.records}
    pairs = {
        f"{a} vs {b}": (by_name[a].entry["robust_acc"], by_name[b].entry["robust_acc"])
        for a, b in (("pgd_linf", "pgd_linf_margin"), ("pgd_l2", "pgd_l2_margin"))
        if a in by_name and b in by_name
    }
    ctx.flags.append(sanity.attack_gaps(pairs, cfg))
    _large_eps_probes(ctx)
    curves = {
        r.name: r.entry["robust_acc"]
        for r in ctx.records
        if _full_grid(ctx, r) and get_spec(r.name).kind == "fixed"
    }
    eps = {k: ctx.plan.eps(by_name[k].norm) for k in curves}
    n = ctx.sample.sizes["expensive"]
    for norm in NORMS:
        base = [r for r in ctx.records if _full_grid(ctx, r) and r.norm == norm]
        if base:
            raw = np.zeros((len(ctx.plan.eps(norm)), n), dtype=bool)
            for r in base:
                raw |= fit_to_tier(r.success, n)
            curves[f"worst_{norm}"] = robust_points(ctx.sample.rows("expensive"), raw).mean(axis=1).tolist()
            eps[f"worst_{norm}"] = ctx.plan.eps(norm)
    ctx.flags.append(
        sanity.monotone(
            curves,
            eps,
            cfg,
            informational=tuple(k for k in curves if k in ctx.plan.attacks and not get_spec(k).iterative),
        )
    )
    if "fgsm" in by_name and "pgd_linf" in by_name:
        ctx.flags.append(
            sanity.iterative_beats_single_step(
                _rates(by_name["fgsm"].entry), _rates(by_name["pgd_linf"].entry), ctx.plan.eps("linf"), cfg
            )
        )
    else:
        ctx.flags.append(sanity.Flag("iterative_ge_single_step", None, "fgsm and pgd_linf not both run"))
    _blackbox_check(ctx)
    _autoattack_gain(ctx)


def _rates(entry: dict) -> list[float]:
    """Success rate among the attacked points from a record entry's robust accuracy over its tier."""
    share = entry["n_attacked"] / max(entry["n"], 1)
    return [np.nan if v is None or share == 0 else 1 - v / share for v in entry["robust_acc"]]


def _large_eps_probes(ctx: Context) -> None:
    rows = ctx.sample.rows("expensive")
    idx = np.flatnonzero(rows)
    x, y = ctx.sample.take(idx)
    for norm, name, e in (
        ("linf", "pgd_linf_margin", ctx.plan.large_eps_linf),
        ("l2", "pgd_l2_margin", ctx.plan.large_eps_l2),
    ):
        out = run_attack(
            get_spec(name),
            ctx.fm,
            x,
            y,
            [e],
            ctx.plan.budget,
            seed=seed_for(ctx.seed, name + "/large"),
            keep_advs=False,
        )
        ra = float((rows.sum() - out.success.sum()) / max(len(rows), 1)) if len(rows) else None
        ctx.checks[f"large_eps_{norm}"] = {"eps": e, "robust_acc": ra, "attack": name, "n": int(len(rows))}
        ctx.flags.append(sanity.large_eps(ra, e, int(len(rows)), ctx.plan.sanity, norm))


def _blackbox_check(ctx: Context) -> None:
    n_bb = ctx.sample.sizes["blackbox"]
    rows = ctx.sample.rows("blackbox")
    bbs = [r for r in ctx.records if r.name in ctx.plan.attacks and get_spec(r.name).access == "black"]
    if not bbs:
        ctx.flags.append(sanity.Flag("blackbox_not_stronger", None, "no black-box attack ran"))
        return
    for rec in bbs:
        grid = ctx.plan.eps(rec.norm)
        white = [r for r in ctx.records if r.name not in {b.name for b in bbs}]
        w, _ = worst_case(white, rec.norm, grid, n_bb)
        b = envelope(fit_to_tier(rec.success, n_bb), grid)
        k = max(int(rows.sum()), 1)
        bb_rate, wb_rate = b[:, rows].sum(axis=1) / k, w[:, rows].sum(axis=1) / k
        bb_only = (b & ~w)[:, rows].sum(axis=1).tolist()
        ctx.checks[f"blackbox_{rec.name}"] = {
            "n": int(n_bb),
            "bb_success": bb_rate.tolist(),
            "wb_success": wb_rate.tolist(),
            "bb_only_points": bb_only,
        }
        ctx.flags.append(
            sanity.blackbox_not_stronger(bb_rate, wb_rate, grid, int(rows.sum()), ctx.plan.sanity, bb_only)
        )


def _autoattack_gain(ctx: Context) -> None:
    """How many points the AutoAttack components broke that the rest of the ensemble had left."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    gains: dict[str, float] = {}
    for norm in NORMS:
        grid = ctx.plan.eps(norm)
        aa = [
            r
            for r in ctx.records
            if r.norm == norm and r.name in ctx.plan.attacks and get_spec(r.name).residual
        ]
        if not aa:
            continue
        rest = [r for r in ctx.records if r not in aa]
        w_rest, _ = worst_case(rest, norm, grid, n)
        w_all, _ = worst_case(ctx.records, norm, grid, n)
        which = ctx.plan.subset(
            norm, ctx.plan.ensemble_eps_linf if norm == "linf" else ctx.plan.ensemble_eps_l2
        )
        for e in which:
            c = grid.index(e)
            gains[f"{norm}@{e:g}"] = float((w_all[c] & ~w_rest[c] & rows).sum() / max(n, 1))
    ctx.checks["autoattack_gain"] = gains
    ctx.flags.append(sanity.autoattack_gain(gains, n, ctx.plan.sanity))
