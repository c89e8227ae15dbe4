"""Sanity flags for adversarial evaluations (Carlini et al. 2019, "On Evaluating Adversarial Robustness").

Each check is a pure function of numbers the bench measured and returns a :class:`Flag`. ``ok=False`` means the
evaluation itself is suspect (gradient masking, too weak an attack, a bug) and is printed loudly at the top of the
report; ``ok=None`` means the check could not run (not enough data) and says why. Tolerances are in
:class:`SanityConfig` so the report can state them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from training.jsonio import clean_json


@dataclass(frozen=True)
class SanityConfig:
    large_eps_max_robust_acc: float = 0.02  # robust accuracy at the large-ε probe must be at most this
    monotone_tol: float = 0.01  # a curve may rise by at most this (share of points) from one ε to the next
    single_step_tol: float = 0.02  # FGSM may beat PGD by at most this (success rate)
    blackbox_tol: float = 0.02  # black-box may beat the white-box ensemble by at most this (success rate)
    convergence_tol: float = (
        0.02  # stronger PGD (more steps, restarts) may move robust accuracy by at most this
    )
    adaptive_convergence_tol: float = 0.01  # same for the adaptive attack (2x steps, 2x restarts)
    zero_grad_max_share: float = 0.01  # at most this share of clean points may have a vanished gradient
    min_grad_norm: float = 1e-30  # an input-gradient norm at or below this has vanished
    gap_tol: float = (
        0.25  # CE and margin PGD may differ by at most this (margin beats CE by ~15 on linear models)
    )
    crosscheck_tol: float = 0.02  # the AutoAttack components may add at most this share of broken points

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Flag:
    name: str
    ok: bool | None
    message: str
    values: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return {True: "ok", False: "FAIL", None: "skipped"}[self.ok]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "message": self.message,
            "values": clean_json(self.values),
        }


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def large_eps(
    robust_acc: float | None, eps: float, n: int, cfg: SanityConfig = SanityConfig(), norm: str = "linf"
) -> Flag:
    """At a huge ε (L∞ 0.5 maps every image to mid-grey; L2 10 nearly so on 28×28) every point must be breakable."""
    name = f"large_eps_{norm}"
    if robust_acc is None or n == 0 or not np.isfinite(robust_acc):
        return Flag(name, None, "no points to probe", {"eps": eps, "n": n})
    ok = robust_acc <= cfg.large_eps_max_robust_acc
    msg = f"robust accuracy {robust_acc:.1%} at {'L∞' if norm == 'linf' else 'L2'} ε={eps} on {n} points" + (
        ""
        if ok
        else f" > {cfg.large_eps_max_robust_acc:.0%}: the attacks cannot even break the model with an "
        "absurd budget: gradient masking or a broken attack"
    )
    return Flag(name, bool(ok), msg, {"eps": eps, "robust_acc": robust_acc, "n": n})


def monotone(
    curves: dict[str, list[float]],
    epsilons: dict[str, list[float]],
    cfg: SanityConfig = SanityConfig(),
    informational: tuple[str, ...] = (),
) -> Flag:
    """Robust accuracy must not increase with ε (beyond ``monotone_tol``) for any iterative attack or the worst case.

    Curves named in ``informational`` (single-step attacks, which are legitimately non-monotone when one big step
    overshoots) are reported in ``values["informational"]`` but cannot fail the check.
    """
    bad = {}
    info = {}
    for name, curve in curves.items():
        c = _arr(curve)
        e = _arr(epsilons[name])
        order = np.argsort(e, kind="stable")
        c = c[order]
        c = c[np.isfinite(c)]
        if len(c) < 2:
            continue
        rises = np.diff(c)
        worst = float(rises.max())
        if worst > cfg.monotone_tol:
            (info if name in informational else bad)[name] = worst
    checked = [k for k in curves if k not in informational]
    if not checked:
        return Flag("monotone", None, "no curves")
    note = (
        ""
        if not info
        else "; single-step (not checked): " + ", ".join(f"{k} +{v:.1%}" for k, v in info.items())
    )
    if bad:
        desc = ", ".join(f"{k} (+{v:.1%})" for k, v in bad.items())
        return Flag(
            "monotone",
            False,
            f"robust accuracy rises with ε for {desc}: a weak or stochastic attack{note}",
            {"rises": bad, "informational": info},
        )
    return Flag(
        "monotone",
        True,
        f"{len(checked)} robust-accuracy curves of iterative attacks and the worst case are "
        f"non-increasing in ε (tolerance {cfg.monotone_tol:.0%}){note}",
        {"informational": info},
    )


def iterative_beats_single_step(
    single_rate: list[float],
    iterative_rate: list[float],
    eps: list[float],
    cfg: SanityConfig = SanityConfig(),
    names: tuple[str, str] = ("fgsm", "pgd_linf"),
) -> Flag:
    """The iterative attack's success rate must be >= the single-step one's at every ε (up to the tolerance)."""
    s, it = _arr(single_rate), _arr(iterative_rate)
    if s.size == 0 or s.size != it.size:
        return Flag("iterative_ge_single_step", None, f"{names[0]} / {names[1]} not both run")
    gap = s - it
    worst = int(np.nanargmax(gap)) if np.isfinite(gap).any() else 0
    ok = not np.any(gap > cfg.single_step_tol)
    msg = (
        f"{names[1]} success >= {names[0]} success at every ε"
        if ok
        else f"{names[0]} beats {names[1]} by {gap[worst]:.1%} at ε={eps[worst]}: the iterative attack is broken or the "
        "loss surface is masked (a single step does better than many)"
    )
    return Flag(
        "iterative_ge_single_step", bool(ok), msg, {"max_gap": float(np.nanmax(gap)) if gap.size else None}
    )


def blackbox_not_stronger(
    bb_rate: list[float],
    wb_rate: list[float],
    eps: list[float],
    n: int,
    cfg: SanityConfig = SanityConfig(),
    bb_only_points: list[int] | None = None,
) -> Flag:
    """A decision-based black-box attack must not beat the white-box ensemble on the same points."""
    b, w = _arr(bb_rate), _arr(wb_rate)
    if n == 0 or b.size == 0 or b.size != w.size:
        return Flag("blackbox_not_stronger", None, "black-box attack not run", {"n": n})
    gap = b - w
    ok = not np.any(gap > cfg.blackbox_tol)
    worst = int(np.argmax(gap))
    vals = {"n": n, "max_gap": float(gap.max()), "bb_only_points_per_eps": bb_only_points}
    if ok:
        return Flag(
            "blackbox_not_stronger",
            True,
            f"black-box success <= white-box success (+{cfg.blackbox_tol:.0%}) at every ε on {n} points",
            vals,
        )
    return Flag(
        "blackbox_not_stronger",
        False,
        f"the black-box attack beats the white-box ensemble by {gap[worst]:.1%} at ε={eps[worst]} on {n} "
        "points: the gradients are misleading (gradient masking)",
        vals,
    )


def converged(
    name: str, base: dict[str, float], strong: dict[str, float], tol: float, detail: str = ""
) -> Flag:
    """A stronger run (more steps and restarts) must move robust accuracy by at most ``tol``."""
    keys = [k for k in base if k in strong and base[k] is not None and strong[k] is not None]
    if not keys:
        return Flag(name, None, "convergence probe not run")
    diffs = {k: float(base[k] - strong[k]) for k in keys}
    worst = max(keys, key=lambda k: abs(diffs[k]))
    ok = all(abs(d) <= tol + 1e-9 for d in diffs.values())
    msg = (
        f"the stronger run ({detail}) moves robust accuracy by at most {abs(diffs[worst]):.1%} (<= {tol:.0%})"
        if ok
        else f"the stronger run ({detail}) moves robust accuracy by {diffs[worst]:+.1%} at ε={worst}: the "
        "default budget has not converged (its successes are folded into the figures; raise the budget)"
    )
    return Flag(name, bool(ok), msg, {"base": base, "strong": strong, "diff": diffs})


def gradient_norms(norms: dict[str, np.ndarray], cfg: SanityConfig = SanityConfig()) -> Flag:
    """Input-gradient norms of the attack losses at the clean points must not vanish.

    ``norms``: per point L2 norms of the CE attacks' objective (``ce``: log of the stable CE,
    :func:`robustness.attack_losses.log_ce`), the logit margin (``margin``) and, for information,
    float32 cross-entropy (``ce_float32``). A norm at or below ``cfg.min_grad_norm`` counts as vanished.
    """
    ce, mg = _arr(norms.get("ce", [])), _arr(norms.get("margin", []))
    if ce.size == 0:
        return Flag("gradient_norms", None, "no points")
    f32 = _arr(norms.get("ce_float32", []))
    small = {k: float(np.mean(v <= cfg.min_grad_norm)) for k, v in (("ce", ce), ("margin", mg)) if v.size}
    vals = {
        "n": int(ce.size),
        "vanished_share": small,
        "floor": cfg.min_grad_norm,
        "median": {
            k: float(np.median(v)) for k, v in (("ce", ce), ("margin", mg), ("ce_float32", f32)) if v.size
        },
        "float32_ce_zero_share": float(np.mean(f32 == 0)) if f32.size else None,
    }
    if small.get("margin", 0.0) > cfg.zero_grad_max_share:
        return Flag(
            "gradient_norms",
            False,
            f"the logit-margin input gradient vanishes on {small['margin']:.1%} of "
            "the clean points: the model is not differentiable where it matters (gradient masking); only "
            "black-box numbers are trustworthy",
            vals,
        )
    if small.get("ce", 0.0) > cfg.zero_grad_max_share:
        return Flag(
            "gradient_norms",
            False,
            f"the gradient of the CE attacks' objective (log CE) vanishes on "
            f"{small['ce']:.1%} of the clean points: CE-based attacks stall there; the margin-based attacks "
            "carry the worst case",
            vals,
        )
    return Flag(
        "gradient_norms",
        True,
        f"attack-loss gradients non-vanishing on {ce.size} points (median norm: "
        f"log CE {vals['median']['ce']:.2g}, margin {vals['median'].get('margin', float('nan')):.2g}; "
        f"float32 CE would be exactly 0 on {vals['float32_ce_zero_share'] or 0:.0%})",
        vals,
    )


def attack_gaps(pairs: dict[str, tuple[list, list]], cfg: SanityConfig = SanityConfig()) -> Flag:
    """Two attacks of the same kind on the same points (CE vs margin PGD) must agree within ``cfg.gap_tol``.

    A large gap means the weaker one is broken (a saturated loss, a bad step size) and hints that the stronger one
    may not be converged either.
    """
    gaps = {}
    for name, (a, b) in pairs.items():
        d = np.abs(
            _arr([np.nan if v is None else v for v in a]) - _arr([np.nan if v is None else v for v in b])
        )
        if np.isfinite(d).any():
            gaps[name] = float(np.nanmax(d))
    if not gaps:
        return Flag("attack_gaps", None, "no pair of comparable attacks ran")
    bad = {k: v for k, v in gaps.items() if v > cfg.gap_tol + 1e-9}
    if bad:
        return Flag(
            "attack_gaps",
            False,
            "robust accuracy differs by "
            + ", ".join(f"{v:.0%} ({k})" for k, v in bad.items())
            + f" > {cfg.gap_tol:.0%}: one loss is saturated or an attack is broken",
            gaps,
        )
    return Flag(
        "attack_gaps",
        True,
        "largest gap " + ", ".join(f"{v:.0%} ({k})" for k, v in gaps.items()) + f" <= {cfg.gap_tol:.0%}",
        gaps,
    )


def autoattack_gain(gains: dict[str, float], n: int, cfg: SanityConfig = SanityConfig()) -> Flag:
    """Share of points only the AutoAttack components broke: at most ``cfg.crosscheck_tol`` (else the rest of the
    ensemble is weak; the AutoAttack successes are in the worst case either way)."""
    if not gains or n == 0:
        return Flag("autoattack_gain", None, "AutoAttack components not run", {"n": n})
    worst = max(gains, key=gains.get)
    ok = gains[worst] <= cfg.crosscheck_tol + 1e-9
    msg = (
        f"the AutoAttack components break at most {gains[worst]:.1%} more points ({worst}, {n} points)"
        if ok
        else f"the AutoAttack components break {gains[worst]:.1%} more points than the rest of the ensemble at {worst}: "
        "the Foolbox attacks alone would overstate robustness"
    )
    return Flag("autoattack_gain", bool(ok), msg, {"gains": gains, "n": n})


def any_failed(flags: list[Flag]) -> bool:
    return any(f.ok is False for f in flags)
