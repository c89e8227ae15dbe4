"""One model's whole adversarial evaluation, :func:`evaluate_adversarial`, and its JSON-ready summary."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustness.adversarial.checks import run_checks
from robustness.adversarial.convergence import run_adaptive, run_pgd_convergence
from robustness.adversarial.ensemble import run_autoattack, run_standard_attacks
from robustness.adversarial.plan import NORMS, AdversarialPlan
from robustness.adversarial.records import Context, Sample, curve, robust_points, worst_case
from robustness.attacks import Norm, QueryCountingModel, get_spec
from robustness.reject_option import RejectOption
from robustness.stats import proportion_of


def _min_norm_summary(ctx: Context, norm: Norm) -> dict | None:
    """Per point the smallest unclipped adversarial over the white-box minimum-norm attacks of ``norm``."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    per = [
        np.asarray([np.inf if v is None else v for v in r.entry["min_norm"]["per_point"][:n]])
        for r in ctx.records
        if r.norm == norm
        and "min_norm" in r.entry
        and get_spec(r.name).access == "white"
        and len(r.entry["min_norm"]["per_point"]) >= n
    ]
    if not per or not rows.any():
        return None
    best = np.min(np.stack(per), axis=0)[rows]
    return {
        "n": int(len(best)),
        "median": float(np.median(best)),
        "found_share": float(np.isfinite(best).mean()),
        "attacks": [
            r.name
            for r in ctx.records
            if r.norm == norm and "min_norm" in r.entry and get_spec(r.name).access == "white"
        ],
        "definition": "per point, the smallest unclipped adversarial perturbation over the white-box "
        "minimum-norm attacks; median over the correctly classified points",
    }


def summarize(ctx: Context, adaptive: dict) -> dict:
    """The JSON-ready result: curves with intervals, the worst case, the reject options, checks and headline."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    worst, reject, headline = {}, {o.name: {"adaptive": adaptive[o.name]} for o in ctx.options}, {}
    for norm in NORMS:
        grid, head = ctx.plan.eps(norm), ctx.plan.headline(norm)
        mask, names = worst_case(ctx.records, norm, grid, n)
        if not names:
            continue
        worst[norm] = {"eps": grid, "n": int(n), "attacks": names, **curve(rows, mask)}
        if head in grid:
            robust = robust_points(rows, mask)[grid.index(head)]
            headline[f"robust_acc_{norm}"] = {
                **proportion_of(robust),
                "eps": head,
                "robust_points": robust.astype(int).tolist(),
            }
        which = ctx.plan.subset(
            norm, ctx.plan.adaptive_eps_linf if norm == "linf" else ctx.plan.adaptive_eps_l2
        )
        for opt in ctx.options:
            m, folded = worst_case(ctx.records, norm, grid, n, option=opt.name)
            if not any(name.startswith("adaptive") for name in folded):
                continue
            cols = [grid.index(e) for e in which]
            reject[opt.name][norm] = {"eps": grid, "n": int(n), "attacks": folded, **curve(rows, m, cols)}
            if head in which:
                robust = robust_points(rows, m)[grid.index(head)]
                headline.setdefault("reject", {}).setdefault(opt.name, {})[norm] = {
                    **proportion_of(robust),
                    "eps": head,
                    "robust_points": robust.astype(int).tolist(),
                }
        mn = _min_norm_summary(ctx, norm)
        if mn:
            worst[norm]["min_norm"] = mn
            headline[f"median_min_{norm}"] = mn["median"]
    df = next((r.entry["min_norm"].get("r_over_x") for r in ctx.records if r.name == "deepfool_l2"), None)
    if df:
        headline["deepfool_score"] = df["mean"]
    return {
        "worst_case": worst,
        "reject": reject,
        "headline": headline,
        "attacks": {r.name: r.entry for r in ctx.records if r.entry},
    }


def evaluate_adversarial(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AdversarialPlan,
    options: list[RejectOption] = (),
    blackbox=None,
    seed: int = 0,
    progress: bool = True,
    label: str = "",
) -> dict:
    """Run the whole adversarial evaluation of ``net`` on the fixed sample ``(x, y)``; returns a JSON-ready dict.

    ``blackbox``: a numpy ``pixels -> logits`` function (the ONNX graph) for the decision-based attack;
    ``options``: the reject options to attack adaptively (and to check every other attack's adversarials against).
    """
    t0 = time.perf_counter()
    net.eval()
    sample = Sample.build(net, x, y, plan)
    n_tasks = len(plan.attacks) + 1 + len(options)
    with tqdm(total=n_tasks, desc=f"attacks {label}".strip(), disable=not progress, leave=False) as bar:
        ctx = Context(
            net,
            plan,
            sample,
            list(options),
            QueryCountingModel(blackbox) if blackbox is not None else None,
            seed,
            bar,
        )
        run_standard_attacks(ctx)
        run_pgd_convergence(ctx)
        run_autoattack(ctx)
        adaptive = {o.name: run_adaptive(ctx, o) for o in ctx.options}
        run_checks(ctx)
    out = summarize(ctx, adaptive)
    return {
        "n": dict(sample.sizes),
        "clean_acc": {t: float(sample.rows(t).mean()) if sample.sizes[t] else None for t in sample.sizes},
        "eps": {norm: plan.eps(norm) for norm in NORMS},
        **out,
        "skipped_attacks": [a for a in plan.attacks if get_spec(a).access == "black" and blackbox is None],
        "checks": ctx.checks,
        "flags": [f.to_dict() for f in ctx.flags],
        "seconds": round(time.perf_counter() - t0, 3),
    }
