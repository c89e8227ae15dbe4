"""The adversarial part of the bench for one model: attack ensemble, adaptive attack on the reject option, checks.

:func:`evaluate_adversarial` takes a network returning ``(logits, z)`` (or logits), a fixed sample of test points,
an :class:`AdversarialPlan` and the model's reject options, and returns a JSON-ready dict.

* :class:`Sample` holds the fixed sample and its nested tiers (prefixes of the same points): the cheap attacks use
  ``n_cheap`` points, the expensive ones (minimum-norm, AutoAttack components, adaptive attack, probes) the first
  ``n_expensive``, the black-box one the first ``n_blackbox``. Attacks run on the correctly classified points; a
  clean error counts as a failure at every ε.
* Every attack that ran at grid ε values is a :class:`Record` (success per ε and point, and for each reject option
  "misclassified AND accepted"); :func:`worst_case` is the one aggregator: per point ``any`` over the records of a
  norm, with the ε envelope (an adversarial found within a smaller ε counts at every larger ε).
* The AutoAttack components follow AutoAttack's protocol: each runs only on the points every earlier attack left
  unbroken at that ε.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustness import sanity
from robustness.adaptive import AdaptiveBudget, RejectOption, adaptive_attack
from robustness.attacks import (
    DEFAULT_ATTACKS,
    AttackBudget,
    AttackOutcome,
    AttackSpec,
    Norm,
    QueryCountingModel,
    get_spec,
    input_gradient_norms,
    run_attack,
    white_box,
)
from robustness.stats import proportion_of
from training.inference import forward_batches

NORMS: tuple[Norm, ...] = ("linf", "l2")


@dataclass
class AdversarialPlan:
    eps_linf: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    n_cheap: int = 200
    n_expensive: int = 100
    n_blackbox: int = 20
    budget: AttackBudget = field(default_factory=AttackBudget)
    adaptive: AdaptiveBudget = field(default_factory=AdaptiveBudget)
    adaptive_eps_linf: tuple[float, ...] = (0.02, 0.05, 0.1)  # () = the whole grid
    adaptive_eps_l2: tuple[float, ...] = (1.0,)
    ensemble_eps_linf: tuple[float, ...] = (0.05, 0.1)  # where the AutoAttack components run; () = whole grid
    ensemble_eps_l2: tuple[float, ...] = (1.0,)
    large_eps_linf: float = 0.5
    large_eps_l2: float = 10.0
    strong_steps_factor: int = 2
    strong_restarts: int = 2
    adaptive_escalations: int = 3  # at most this many doublings of the adaptive budget in its convergence check
    headline_linf: float = 0.05
    headline_l2: float = 1.0
    sanity: sanity.SanityConfig = field(default_factory=sanity.SanityConfig)

    def eps(self, norm: Norm) -> list[float]:
        return [float(e) for e in (self.eps_linf if norm == "linf" else self.eps_l2)]

    def subset(self, norm: Norm, which: tuple[float, ...]) -> list[float]:
        """The grid ε among ``which`` (all positive grid ε when ``which`` is empty)."""
        return [e for e in self.eps(norm) if e > 0 and (not which or any(abs(e - w) < 1e-12 for w in which))]

    def headline(self, norm: Norm) -> float:
        return self.headline_linf if norm == "linf" else self.headline_l2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        return d


@dataclass
class Sample:
    """The fixed sample (x, y), which points the model classifies correctly, and the nested tier sizes."""

    x: torch.Tensor
    y: torch.Tensor
    correct: np.ndarray  # (n_cheap,) bool
    sizes: dict[str, int]

    @classmethod
    def build(cls, net: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AdversarialPlan) -> Sample:
        n_cheap = min(plan.n_cheap, len(x))
        n_exp = min(plan.n_expensive, n_cheap)
        sizes = {"cheap": n_cheap, "expensive": n_exp, "blackbox": min(plan.n_blackbox, n_exp)}
        x, y = x[:n_cheap], y[:n_cheap]
        logits, _ = forward_batches(net, x, 512, x.device)
        correct = logits.argmax(1) == y.cpu().numpy() if n_cheap else np.zeros(0, bool)
        return cls(x, y, correct, sizes)

    def rows(self, tier: str) -> np.ndarray:
        """Correctly classified mask over the tier's points."""
        return self.correct[: self.sizes[tier]]

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        it = torch.as_tensor(idx, device=self.x.device, dtype=torch.long)
        return self.x[it], self.y[it]


@dataclass
class Record:
    """One attack that ran: success (len(grid ε), n_tier) and, per reject option, misclassified AND accepted."""

    name: str
    norm: Norm
    success: np.ndarray
    fooled: dict[str, np.ndarray] = field(default_factory=dict)
    entry: dict = field(default_factory=dict)


def _fit(mask: np.ndarray, n: int) -> np.ndarray:
    """Restrict (longer tier) or pad with False (shorter tier: not attacked) a (E, m) mask to (E, n)."""
    out = np.zeros((mask.shape[0], n), dtype=bool)
    m = min(n, mask.shape[1])
    out[:, :m] = mask[:, :m]
    return out


def envelope(mask: np.ndarray, eps: list[float]) -> np.ndarray:
    """Cumulative OR over increasing ε: an adversarial found within a smaller ε is valid at every larger ε."""
    order = np.argsort(np.asarray(eps, dtype=np.float64), kind="stable")
    out = np.empty_like(mask, dtype=bool)
    out[order] = np.logical_or.accumulate(np.asarray(mask, dtype=bool)[order], axis=0)
    return out


def worst_case(records: list[Record], norm: Norm, eps: list[float], n: int, option: str | None = None,
               ) -> tuple[np.ndarray, list[str]]:
    """Per point and ε: broken by any record of ``norm`` (for ``option``: misclassified AND accepted by it).

    Returns the (len(eps), n) mask after the ε envelope and the names of the records folded in.
    """
    picked = [r for r in records if r.norm == norm and (option is None or option in r.fooled)]
    mask = np.zeros((len(eps), n), dtype=bool)
    for r in picked:
        mask |= _fit(r.success if option is None else r.fooled[option], n)
    return envelope(mask, eps), [r.name for r in picked]


def robust_points(correct: np.ndarray, broken: np.ndarray) -> np.ndarray:
    """(E, n): correctly classified and not broken."""
    return np.asarray(correct, dtype=bool)[None, :] & ~np.asarray(broken, dtype=bool)


def _seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _floats(values) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _curve(correct: np.ndarray, broken: np.ndarray, cols: list[int] | None = None) -> dict:
    """Robust accuracy per ε with Wilson 95% intervals (``None`` at ε outside ``cols``)."""
    robust = robust_points(correct, broken)
    props = [proportion_of(r) if cols is None or k in cols else None for k, r in enumerate(robust)]
    return {"robust_acc": [p["value"] if p else None for p in props],
            "ci95": [p["ci95"] if p else None for p in props]}


@dataclass
class Context:
    """Everything one model's evaluation shares: the model, the sample, the reject options and what ran."""

    net: nn.Module
    plan: AdversarialPlan
    sample: Sample
    options: list[RejectOption]
    blackbox: QueryCountingModel | None
    seed: int
    bar: tqdm
    records: list[Record] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    flags: list[sanity.Flag] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fm = white_box(self.net)

    def tick(self, what: str) -> None:
        self.bar.set_postfix_str(what)

    def add(self, record: Record) -> Record:
        self.records.append(record)
        return record


def _record(ctx: Context, spec: AttackSpec, idx: np.ndarray, out: AttackOutcome, cols: list[int],
            name: str | None = None) -> Record:
    """Fold an outcome on the tier points ``idx`` at grid columns ``cols`` into a :class:`Record`."""
    n_t = ctx.sample.sizes[spec.tier]
    grid = ctx.plan.eps(spec.norm)
    success = np.zeros((len(grid), n_t), dtype=bool)
    success[np.ix_(cols, idx)] = out.success
    rec = Record(name or spec.name, spec.norm, success)
    _, y = ctx.sample.take(idx)
    for opt in ctx.options:
        fooled = np.zeros_like(success)
        for k, c in enumerate(cols):
            if out.advs is not None and len(idx):
                fooled[c, idx] = out.success[k] & opt.fooled(ctx.net, out.advs[k], y)
        rec.fooled[opt.name] = fooled
    rows = ctx.sample.rows(spec.tier)
    rec.entry = {"norm": spec.norm, "kind": spec.kind, "access": spec.access, "tier": spec.tier,
                 "library": spec.library, "description": spec.description, "n": int(n_t), "n_attacked": int(len(idx)),
                 "eps": [grid[c] for c in cols], "seconds": round(out.seconds, 3),
                 **_curve(rows, success[cols], None)}
    if out.queries is not None:
        rec.entry["queries_per_point"] = out.queries / max(len(idx), 1)
    if out.min_norm is not None:
        rec.entry["min_norm"] = _min_norm_entry(ctx, spec, idx, out.min_norm)
    return rec


def _min_norm_entry(ctx: Context, spec: AttackSpec, idx: np.ndarray, min_norm: np.ndarray) -> dict:
    found = np.isfinite(min_norm)
    entry = {"per_point": _floats(_scatter(ctx.sample.sizes[spec.tier], idx, min_norm, np.nan)),
             "found_share": float(found.mean()) if len(found) else None,
             "median": float(np.median(min_norm)) if len(found) else None}
    if spec.name == "deepfool_l2" and found.any():
        x, _ = ctx.sample.take(idx)
        ratio = min_norm[found] / np.maximum(x.flatten(1).norm(dim=1).cpu().numpy()[found], 1e-12)
        entry["r_over_x"] = {"mean": float(ratio.mean()), "median": float(np.median(ratio)), "n": int(found.sum()),
                             "definition": "||r||_2/||x||_2 over correctly classified points; r = unclipped DeepFool "
                                           "perturbation in pixel space [0, 1], overshoot 0.02, box-constrained"}
    return entry


def _scatter(n: int, idx: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(n, fill, dtype=np.float64)
    out[idx] = values
    return out


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
        out = run_attack(spec, model, x, y, grid, ctx.plan.budget, seed=_seed_for(ctx.seed, name))
        ctx.add(_record(ctx, spec, idx, out, list(range(len(grid)))))
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
            out = run_attack(spec, ctx.fm, x, y, [e], ctx.plan.budget, seed=_seed_for(ctx.seed, name))
            part = _record(ctx, replace(spec, tier="expensive"), idx, out, [c])
            success |= part.success
            for k in fooled:
                fooled[k] |= part.fooled[k]
        rec = ctx.add(Record(name, spec.norm, success, fooled))
        rec.entry = {"norm": spec.norm, "library": spec.library, "description": spec.description,
                     "tier": "expensive", "residual": True, "n": int(n), "attacked_per_eps": attacked,
                     "extra_broken_per_eps": {k: int(success[grid.index(float(k))].sum()) for k in attacked},
                     "seconds": round(time.perf_counter() - t0, 3)}
        ctx.bar.update(1)


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
    strong = replace(plan.budget, pgd_steps=plan.budget.pgd_steps * plan.strong_steps_factor,
                     pgd_restarts=max(2 * plan.budget.pgd_restarts, plan.strong_restarts))
    rows = ctx.sample.rows("expensive")
    idx = np.flatnonzero(rows)
    grid = plan.eps("linf")
    cols = [grid.index(e) for e in conv_eps]
    base_recs, strong_recs = [r for r in ctx.records if r.name in names], []
    for name in names:
        x, y = ctx.sample.take(idx)
        out = run_attack(get_spec(name), ctx.fm, x, y, conv_eps, strong, seed=_seed_for(ctx.seed, name + "/strong"))
        strong_recs.append(ctx.add(_record(ctx, replace(get_spec(name), tier="expensive"), idx, out, cols,
                                           name=f"{name}_strong")))
    n = len(rows)
    fam = {k: robust_points(rows, worst_case(recs, "linf", grid, n)[0]).mean(axis=1)
           for k, recs in (("base", base_recs), ("strong", strong_recs))}
    base = {f"{e:g}": float(fam["base"][c]) for e, c in zip(conv_eps, cols, strict=True)}
    stronger = {f"{e:g}": float(fam["strong"][c]) for e, c in zip(conv_eps, cols, strict=True)}
    detail = (f"{'+'.join(names)}: {strong.pgd_steps} steps x {strong.pgd_restarts} restarts vs "
              f"{plan.budget.pgd_steps} x {plan.budget.pgd_restarts}, {int(rows.sum())} points")
    ctx.checks["pgd_convergence"] = {"eps": conv_eps, "base": base, "strong": stronger, "detail": detail}
    ctx.flags.append(sanity.converged("pgd_converged", base, stronger, plan.sanity.convergence_tol, detail)
                     if names else sanity.Flag("pgd_converged", None, "PGD did not run"))
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
    out: dict = {"budget": ctx.plan.adaptive.to_dict(), "threshold": option.threshold,
                 "confirmed_by_served_graph": option.confirm is not None}
    for norm in NORMS:
        ctx.tick(f"adaptive {option.name} {norm}")
        grid = ctx.plan.eps(norm)
        which = ctx.plan.subset(norm, ctx.plan.adaptive_eps_linf if norm == "linf" else ctx.plan.adaptive_eps_l2)
        t0 = time.perf_counter()
        res = adaptive_attack(ctx.net, option, x, y, which, norm, ctx.plan.adaptive,
                              seed=_seed_for(ctx.seed, f"adaptive/{option.name}/{norm}"))
        _adaptive_record(ctx, f"adaptive[{option.name}]", norm, option.name, grid, n, idx, res.epsilons, res.success)
        head = ctx.plan.headline(norm)
        conv, extra = (_escalate(ctx, option, norm, idx, x, y, res.success[which.index(head)]) if head in which
                       else ({"eps": head, "levels": []}, 0))
        unconfirmed = res.unconfirmed + extra
        out[norm] = {"eps": which, "seconds": round(time.perf_counter() - t0, 3), "unconfirmed": unconfirmed,
                     "convergence": conv}
        levels = len(conv["levels"])
        detail = (f"{option.name}, {norm} ε={head:g}: the last of {levels} doubling(s) of steps and restarts, on the "
                  f"points still unbroken, {int(rows.sum())} points in all")
        ctx.flags.append(sanity.converged(f"adaptive_converged[{option.name},{norm}]",
                                          {f"{head:g}": conv["base"]} if "base" in conv else {},
                                          {f"{head:g}": conv["strong"]} if "strong" in conv else {},
                                          ctx.plan.sanity.adaptive_convergence_tol, detail))
    ctx.bar.update(1)
    return out


def _escalate(ctx: Context, option: RejectOption, norm: Norm, idx: np.ndarray, x: torch.Tensor, y: torch.Tensor,
              broken: np.ndarray) -> tuple[dict, int]:
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
        r = adaptive_attack(ctx.net, option, x[surv], y[surv], [head], norm, budget,
                            seed=_seed_for(ctx.seed, f"adaptive-strong{level}/{option.name}/{norm}"))
        unconfirmed += r.unconfirmed
        hit = np.zeros((1, n_rows), dtype=bool)
        hit[0, surv] = r.success[0]
        _adaptive_record(ctx, f"adaptive_strong{level}[{option.name}]", norm, option.name, grid, n, idx, [head], hit)
        broken = broken | hit[0]
        strong_ra = float((n_rows - broken.sum()) / n)
        conv["levels"].append({"budget": budget.to_dict(), "points": int(len(surv)), "robust_acc": strong_ra})
        conv.update(base=base_ra, strong=strong_ra, strong_budget=budget.to_dict())
        if base_ra - strong_ra <= ctx.plan.sanity.adaptive_convergence_tol + 1e-9:
            break
    return conv, unconfirmed


def _adaptive_record(ctx: Context, name: str, norm: Norm, option: str, grid: list[float], n: int, idx: np.ndarray,
                     epsilons: list[float], success: np.ndarray) -> None:
    """Fold one adaptive run (successes on the sample rows ``idx`` at ``epsilons``) into the worst case."""
    mask = np.zeros((len(grid), n), dtype=bool)
    mask[np.ix_([grid.index(e) for e in epsilons], idx)] = success
    ctx.add(Record(name, norm, mask, {option: mask}))


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
    pairs = {f"{a} vs {b}": (by_name[a].entry["robust_acc"], by_name[b].entry["robust_acc"])
             for a, b in (("pgd_linf", "pgd_linf_margin"), ("pgd_l2", "pgd_l2_margin"))
             if a in by_name and b in by_name}
    ctx.flags.append(sanity.attack_gaps(pairs, cfg))
    _large_eps_probes(ctx)
    curves = {r.name: r.entry["robust_acc"] for r in ctx.records if _full_grid(ctx, r) and get_spec(r.name).kind
              == "fixed"}
    eps = {k: ctx.plan.eps(by_name[k].norm) for k in curves}
    n = ctx.sample.sizes["expensive"]
    for norm in NORMS:
        base = [r for r in ctx.records if _full_grid(ctx, r) and r.norm == norm]
        if base:
            raw = np.zeros((len(ctx.plan.eps(norm)), n), dtype=bool)
            for r in base:
                raw |= _fit(r.success, n)
            curves[f"worst_{norm}"] = robust_points(ctx.sample.rows("expensive"), raw).mean(axis=1).tolist()
            eps[f"worst_{norm}"] = ctx.plan.eps(norm)
    ctx.flags.append(sanity.monotone(curves, eps, cfg, informational=tuple(
        k for k in curves if k in ctx.plan.attacks and not get_spec(k).iterative)))
    if "fgsm" in by_name and "pgd_linf" in by_name:
        ctx.flags.append(sanity.iterative_beats_single_step(
            _rates(by_name["fgsm"].entry), _rates(by_name["pgd_linf"].entry), ctx.plan.eps("linf"), cfg))
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
    for norm, name, e in (("linf", "pgd_linf_margin", ctx.plan.large_eps_linf),
                          ("l2", "pgd_l2_margin", ctx.plan.large_eps_l2)):
        out = run_attack(get_spec(name), ctx.fm, x, y, [e], ctx.plan.budget, seed=_seed_for(ctx.seed, name + "/large"),
                         keep_advs=False)
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
        b = envelope(_fit(rec.success, n_bb), grid)
        k = max(int(rows.sum()), 1)
        bb_rate, wb_rate = b[:, rows].sum(axis=1) / k, w[:, rows].sum(axis=1) / k
        bb_only = (b & ~w)[:, rows].sum(axis=1).tolist()
        ctx.checks[f"blackbox_{rec.name}"] = {"n": int(n_bb), "bb_success": bb_rate.tolist(),
                                              "wb_success": wb_rate.tolist(), "bb_only_points": bb_only}
        ctx.flags.append(sanity.blackbox_not_stronger(bb_rate, wb_rate, grid, int(rows.sum()), ctx.plan.sanity,
                                                      bb_only))


def _autoattack_gain(ctx: Context) -> None:
    """How many points the AutoAttack components broke that the rest of the ensemble had left."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    gains: dict[str, float] = {}
    for norm in NORMS:
        grid = ctx.plan.eps(norm)
        aa = [r for r in ctx.records if r.norm == norm and r.name in ctx.plan.attacks and get_spec(r.name).residual]
        if not aa:
            continue
        rest = [r for r in ctx.records if r not in aa]
        w_rest, _ = worst_case(rest, norm, grid, n)
        w_all, _ = worst_case(ctx.records, norm, grid, n)
        which = ctx.plan.subset(norm, ctx.plan.ensemble_eps_linf if norm == "linf" else ctx.plan.ensemble_eps_l2)
        for e in which:
            c = grid.index(e)
            gains[f"{norm}@{e:g}"] = float((w_all[c] & ~w_rest[c] & rows).sum() / max(n, 1))
    ctx.checks["autoattack_gain"] = gains
    ctx.flags.append(sanity.autoattack_gain(gains, n, ctx.plan.sanity))


def _min_norm_summary(ctx: Context, norm: Norm) -> dict | None:
    """Per point the smallest unclipped adversarial over the white-box minimum-norm attacks of ``norm``."""
    n = ctx.sample.sizes["expensive"]
    rows = ctx.sample.rows("expensive")
    per = [np.asarray([np.inf if v is None else v for v in r.entry["min_norm"]["per_point"][:n]])
           for r in ctx.records if r.norm == norm and "min_norm" in r.entry and get_spec(r.name).access == "white"
           and len(r.entry["min_norm"]["per_point"]) >= n]
    if not per or not rows.any():
        return None
    best = np.min(np.stack(per), axis=0)[rows]
    return {"n": int(len(best)), "median": float(np.median(best)), "found_share": float(np.isfinite(best).mean()),
            "attacks": [r.name for r in ctx.records if r.norm == norm and "min_norm" in r.entry
                        and get_spec(r.name).access == "white"],
            "definition": "per point, the smallest unclipped adversarial perturbation over the white-box "
                          "minimum-norm attacks; median over the correctly classified points"}


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
        worst[norm] = {"eps": grid, "n": int(n), "attacks": names, **_curve(rows, mask)}
        if head in grid:
            robust = robust_points(rows, mask)[grid.index(head)]
            headline[f"robust_acc_{norm}"] = {**proportion_of(robust), "eps": head,
                                              "robust_points": robust.astype(int).tolist()}
        which = ctx.plan.subset(norm, ctx.plan.adaptive_eps_linf if norm == "linf" else ctx.plan.adaptive_eps_l2)
        for opt in ctx.options:
            m, folded = worst_case(ctx.records, norm, grid, n, option=opt.name)
            if not any(name.startswith("adaptive") for name in folded):
                continue
            cols = [grid.index(e) for e in which]
            reject[opt.name][norm] = {"eps": grid, "n": int(n), "attacks": folded, **_curve(rows, m, cols)}
            if head in which:
                robust = robust_points(rows, m)[grid.index(head)]
                headline.setdefault("reject", {}).setdefault(opt.name, {})[norm] = {
                    **proportion_of(robust), "eps": head, "robust_points": robust.astype(int).tolist()}
        mn = _min_norm_summary(ctx, norm)
        if mn:
            worst[norm]["min_norm"] = mn
            headline[f"median_min_{norm}"] = mn["median"]
    df = next((r.entry["min_norm"].get("r_over_x") for r in ctx.records if r.name == "deepfool_l2"), None)
    if df:
        headline["deepfool_score"] = df["mean"]
    return {"worst_case": worst, "reject": reject, "headline": headline,
            "attacks": {r.name: r.entry for r in ctx.records if r.entry}}


def evaluate_adversarial(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AdversarialPlan, options: list[RejectOption] = (),
    blackbox=None, seed: int = 0, progress: bool = True, label: str = "",
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
        ctx = Context(net, plan, sample, list(options),
                      QueryCountingModel(blackbox) if blackbox is not None else None, seed, bar)
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
