"""Convergence: stronger PGD runs at two ε, and the adaptive attack on each reject option with its escalating
convergence check (every run folded into the worst case)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from robustness import sanity
from robustness.adaptive import adaptive_attack
from robustness.adversarial.plan import NORMS
from robustness.adversarial.records import (
    Context,
    add_adaptive_record,
    fold_outcome,
    robust_points,
    seed_for,
    worst_case,
)
from robustness.attacks import Norm, get_spec, run_attack
from robustness.reject_option import RejectOption


def _convergence_eps(ctx: Context, names: list[str]) -> list[float]:
    """The headline ε and the grid ε where the PGD family leaves about half the clean accuracy."""
    grid = ctx.plan.eps("linf")
    out = [ctx.plan.headline_linf] if ctx.plan.headline_linf in grid else []
    rows = ctx.sample.rows("expensive")
    picked = [r for r in ctx.records if r.name in names]
    if picked and rows.any():
        broken, _ = worst_case(picked, "linf", grid, len(rows))
        ra = robust_points(rows, broken).mean(axis=1)
        cands = [(abs(ra[k] - rows.mean() / 2), e) for k, e in enumerate(grid) if e > 0]
        if cands and min(cands)[1] not in out:
            out.append(min(cands)[1])
    return out


def run_pgd_convergence(ctx: Context) -> None:
    """PGD (log CE and margin) with more steps and restarts at two ε; folded into the worst case."""
    ctx.tick("convergence")
    names = [n for n in ("pgd_linf", "pgd_linf_margin") if any(r.name == n for r in ctx.records)]
    conv_eps = _convergence_eps(ctx, names)
    plan = ctx.plan
    strong = replace(
        plan.budget,
        pgd_steps=plan.budget.pgd_steps * plan.strong_steps_factor,
        pgd_restarts=max(2 * plan.budget.pgd_restarts, plan.strong_restarts),
    )
    rows = ctx.sample.rows("expensive")
    idx = np.flatnonzero(rows)
    grid = plan.eps("linf")
    cols = [grid.index(e) for e in conv_eps]
    base_recs, strong_recs = [r for r in ctx.records if r.name in names], []
    for name in names:
        x, y = ctx.sample.take(idx)
        out = run_attack(
            get_spec(name), ctx.fm, x, y, conv_eps, strong, seed=seed_for(ctx.seed, name + "/strong")
        )
        strong_recs.append(
            ctx.add(
                fold_outcome(
                    ctx, replace(get_spec(name), tier="expensive"), idx, out, cols, name=f"{name}_strong"
                )
            )
        )
    n = len(rows)
    fam = {
        k: robust_points(rows, worst_case(recs, "linf", grid, n)[0]).mean(axis=1)
        for k, recs in (("base", base_recs), ("strong", strong_recs))
    }
    base = {f"{e:g}": float(fam["base"][c]) for e, c in zip(conv_eps, cols, strict=True)}
    stronger = {f"{e:g}": float(fam["strong"][c]) for e, c in zip(conv_eps, cols, strict=True)}
    detail = (
        f"{'+'.join(names)}: {strong.pgd_steps} steps x {strong.pgd_restarts} restarts vs "
        f"{plan.budget.pgd_steps} x {plan.budget.pgd_restarts}, {int(rows.sum())} points"
    )
    ctx.checks["pgd_convergence"] = {"eps": conv_eps, "base": base, "strong": stronger, "detail": detail}
    ctx.flags.append(
        sanity.converged("pgd_converged", base, stronger, plan.sanity.convergence_tol, detail)
        if names
        else sanity.Flag("pgd_converged", None, "PGD did not run")
    )
    ctx.bar.update(1)


def run_adaptive(ctx: Context, option: RejectOption) -> dict:
    """The adaptive attack on ``option`` in both norms, plus its convergence check at the headline ε.

    The check escalates: twice the steps and twice the restarts on the points every run so far left unbroken,
    again and again (at most ``plan.adaptive_escalations`` times) while a doubling still breaks more than
    ``sanity.adaptive_convergence_tol`` of the points. Every run is a record of the worst case; the flag fails when
    the last doubling still moved the figure.
    """
    rows = ctx.sample.rows("expensive")
    idx = np.flatnonzero(rows)
    x, y = ctx.sample.take(idx)
    n = len(rows)
    out: dict = {
        "budget": ctx.plan.adaptive.to_dict(),
        "threshold": option.threshold,
        "confirmed_by_served_graph": option.confirm is not None,
    }
    for norm in NORMS:
        ctx.tick(f"adaptive {option.name} {norm}")
        grid = ctx.plan.eps(norm)
        which = ctx.plan.subset(
            norm, ctx.plan.adaptive_eps_linf if norm == "linf" else ctx.plan.adaptive_eps_l2
        )
        t0 = time.perf_counter()
        res = adaptive_attack(
            ctx.net,
            option,
            x,
            y,
            which,
            norm,
            ctx.plan.adaptive,
            seed=seed_for(ctx.seed, f"adaptive/{option.name}/{norm}"),
        )
        add_adaptive_record(
            ctx, f"adaptive[{option.name}]", norm, option.name, grid, n, idx, res.epsilons, res.success
        )
        head = ctx.plan.headline(norm)
        conv, extra = (
            _escalate(ctx, option, norm, idx, x, y, res.success[which.index(head)])
            if head in which
            else ({"eps": head, "levels": []}, 0)
        )
        unconfirmed = res.unconfirmed + extra
        out[norm] = {
            "eps": which,
            "seconds": round(time.perf_counter() - t0, 3),
            "unconfirmed": unconfirmed,
            "convergence": conv,
        }
        levels = len(conv["levels"])
        detail = (
            f"{option.name}, {norm} ε={head:g}: the last of {levels} doubling(s) of steps and restarts, on the "
            f"points still unbroken, {int(rows.sum())} points in all"
        )
        ctx.flags.append(
            sanity.converged(
                f"adaptive_converged[{option.name},{norm}]",
                {f"{head:g}": conv["base"]} if "base" in conv else {},
                {f"{head:g}": conv["strong"]} if "strong" in conv else {},
                ctx.plan.sanity.adaptive_convergence_tol,
                detail,
            )
        )
    ctx.bar.update(1)
    return out


def _escalate(
    ctx: Context,
    option: RejectOption,
    norm: Norm,
    idx: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    broken: np.ndarray,
) -> tuple[dict, int]:
    """The convergence check at the headline ε: doublings of the adaptive budget on the points still unbroken
    (``x``, ``y``: the sample rows ``idx``; ``broken``: per row after the base run) until one moves the figure by
    at most the tolerance.
    Returns the ``convergence`` entry (``base``/``strong``: robust accuracy before and after the last doubling) and
    the number of successes the served graph did not confirm."""
    head, n, n_rows = ctx.plan.headline(norm), ctx.sample.sizes["expensive"], len(idx)
    grid = ctx.plan.eps(norm)
    conv: dict = {"eps": head, "levels": []}
    budget, unconfirmed = ctx.plan.adaptive, 0
    for level in range(1, ctx.plan.adaptive_escalations + 1):
        budget = budget.stronger()
        base_ra = float((n_rows - broken.sum()) / n)
        surv = np.flatnonzero(~broken)
        if len(surv) == 0:
            conv["levels"].append({"budget": budget.to_dict(), "points": 0, "robust_acc": base_ra})
            break
        r = adaptive_attack(
            ctx.net,
            option,
            x[surv],
            y[surv],
            [head],
            norm,
            budget,
            seed=seed_for(ctx.seed, f"adaptive-strong{level}/{option.name}/{norm}"),
        )
        unconfirmed += r.unconfirmed
        hit = np.zeros((1, n_rows), dtype=bool)
        hit[0, surv] = r.success[0]
        add_adaptive_record(
            ctx, f"adaptive_strong{level}[{option.name}]", norm, option.name, grid, n, idx, [head], hit
        )
        broken = broken | hit[0]
        strong_ra = float((n_rows - broken.sum()) / n)
        conv["levels"].append({"budget": budget.to_dict(), "points": int(len(surv)), "robust_acc": strong_ra})
        conv.update(base=base_ra, strong=strong_ra, strong_budget=budget.to_dict())
        if base_ra - strong_ra <= ctx.plan.sanity.adaptive_convergence_tol + 1e-9:
            break
    return conv, unconfirmed
