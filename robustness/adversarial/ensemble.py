"""The attack ensemble on one model: every requested attack on its tier, then the AutoAttack components, which
follow AutoAttack's protocol (each runs only on the points every earlier attack left unbroken at that ε)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from robustness.adversarial.records import Context, Record, fold_outcome, seed_for, worst_case
from robustness.attacks import get_spec, run_attack


def run_standard_attacks(ctx: Context) -> None:
    """Every requested attack that is not residual, on the correctly classified points of its tier."""
    for name in ctx.plan.attacks:
        spec = get_spec(name)
        if spec.residual or (spec.access == "black" and ctx.blackbox is None):
            continue
        ctx.tick(name)
        idx = np.flatnonzero(ctx.sample.rows(spec.tier))
        x, y = ctx.sample.take(idx)
        grid = ctx.plan.eps(spec.norm)
        model = ctx.blackbox if spec.access == "black" else ctx.fm
        out = run_attack(spec, model, x, y, grid, ctx.plan.budget, seed=seed_for(ctx.seed, name))
        ctx.add(fold_outcome(ctx, spec, idx, out, list(range(len(grid)))))
        ctx.bar.update(1)


def run_autoattack(ctx: Context) -> None:
    """The AutoAttack components, each on the points every earlier attack left unbroken at that ε."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    for name in ctx.plan.attacks:
        spec = get_spec(name)
        if not spec.residual:
            continue
        ctx.tick(name)
        grid = ctx.plan.eps(spec.norm)
        which = ctx.plan.ensemble_eps_linf if spec.norm == "linf" else ctx.plan.ensemble_eps_l2
        success = np.zeros((len(grid), n), dtype=bool)
        fooled = {o.name: np.zeros_like(success) for o in ctx.options}
        t0, attacked = time.perf_counter(), {}
        for e in ctx.plan.subset(spec.norm, which):
            c = grid.index(e)
            broken, _ = worst_case(ctx.records, spec.norm, grid, n)
            idx = np.flatnonzero(rows & ~broken[c])
            attacked[f"{e:g}"] = int(len(idx))
            x, y = ctx.sample.take(idx)
            out = run_attack(spec, ctx.fm, x, y, [e], ctx.plan.budget, seed=seed_for(ctx.seed, name))
            part = fold_outcome(ctx, replace(spec, tier="expensive"), idx, out, [c])
            success |= part.success
            for k in fooled:
                fooled[k] |= part.fooled[k]
        rec = ctx.add(Record(name, spec.norm, success, fooled))
        rec.entry = {
            "norm": spec.norm,
            "library": spec.library,
            "description": spec.description,
            "tier": "expensive",
            "residual": True,
            "n": int(n),
            "attacked_per_eps": attacked,
            "extra_broken_per_eps": {k: int(success[grid.index(float(k))].sum()) for k in attacked},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        ctx.bar.update(1)
