"""Sanity flags for adversarial evaluations (Carlini et al. 2019, "On Evaluating Adversarial Robustness").

Each check is a pure function of numbers the bench measured and returns a :class:`Flag`. ``ok=False`` means the
evaluation itself is suspect (gradient masking, too weak an attack, a bug) and is printed loudly at the top of the
report; ``ok=None`` means the check could not run (not enough data) and says why. Tolerances are in
:class:`SanityConfig` so the report can state them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class SanityConfig:
    large_eps_max_robust_acc: float = 0.02  # robust accuracy at the large-ε probe must be at most this
    monotone_tol: float = 0.01  # a curve may rise by at most this (share of points) from one ε to the next
    single_step_tol: float = 0.02  # FGSM may beat PGD by at most this (success rate)
    blackbox_tol: float = 0.02  # black-box may beat the white-box ensemble by at most this (success rate)
    convergence_tol: float = 0.02  # stronger PGD (more steps, restarts) must change robust accuracy by < this
    zero_grad_max_share: float = 0.01  # at most this share of clean points may have an exactly zero gradient
    crosscheck_tol: float = 0.02  # our worst case may exceed ART APGD's robust accuracy by at most this

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
        return {"name": self.name, "ok": self.ok, "status": self.status, "message": self.message,
                "values": _plain(self.values)}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def large_eps(robust_acc: float | None, eps: float, n: int, cfg: SanityConfig = SanityConfig()) -> Flag:
    """At a huge ε (L∞ 0.5 maps every image to mid-grey) every point must be breakable."""
    if robust_acc is None or n == 0 or not np.isfinite(robust_acc):
        return Flag("large_eps", None, "no points to probe", {"eps": eps, "n": n})
    ok = robust_acc <= cfg.large_eps_max_robust_acc
    msg = (f"robust accuracy {robust_acc:.1%} at L∞ ε={eps} on {n} points"
           + ("" if ok else f" > {cfg.large_eps_max_robust_acc:.0%}: the attacks cannot even break the model with an "
              "absurd budget: gradient masking or a broken attack"))
    return Flag("large_eps", bool(ok), msg, {"eps": eps, "robust_acc": robust_acc, "n": n})


def monotone(curves: dict[str, list[float]], epsilons: dict[str, list[float]], cfg: SanityConfig = SanityConfig(),
             informational: tuple[str, ...] = ()) -> Flag:
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
    note = "" if not info else "; single-step (not checked): " + ", ".join(f"{k} +{v:.1%}" for k, v in info.items())
    if bad:
        desc = ", ".join(f"{k} (+{v:.1%})" for k, v in bad.items())
        return Flag("monotone", False, f"robust accuracy rises with ε for {desc}: a weak or stochastic attack{note}",
                    {"rises": bad, "informational": info})
    return Flag("monotone", True, f"{len(checked)} robust-accuracy curves of iterative attacks and the worst case are "
                f"non-increasing in ε (tolerance {cfg.monotone_tol:.0%}){note}", {"informational": info})


def iterative_beats_single_step(
    single_rate: list[float], iterative_rate: list[float], eps: list[float], cfg: SanityConfig = SanityConfig(),
    names: tuple[str, str] = ("fgsm", "pgd_linf"),
) -> Flag:
    """The iterative attack's success rate must be >= the single-step one's at every ε (up to the tolerance)."""
    s, it = _arr(single_rate), _arr(iterative_rate)
    if s.size == 0 or s.size != it.size:
        return Flag("iterative_ge_single_step", None, f"{names[0]} / {names[1]} not both run")
    gap = s - it
    worst = int(np.nanargmax(gap)) if np.isfinite(gap).any() else 0
    ok = not np.any(gap > cfg.single_step_tol)
    msg = (f"{names[1]} success >= {names[0]} success at every ε" if ok else
           f"{names[0]} beats {names[1]} by {gap[worst]:.1%} at ε={eps[worst]}: the iterative attack is broken or the "
           "loss surface is masked (a single step does better than many)")
    return Flag("iterative_ge_single_step", bool(ok), msg, {"max_gap": float(np.nanmax(gap)) if gap.size else None})


def blackbox_not_stronger(
    bb_rate: list[float], wb_rate: list[float], eps: list[float], n: int, cfg: SanityConfig = SanityConfig(),
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
        return Flag("blackbox_not_stronger", True, f"black-box success <= white-box success (+{cfg.blackbox_tol:.0%}) "
                    f"at every L2 ε on {n} points", vals)
    return Flag("blackbox_not_stronger", False,
                f"the black-box attack beats the white-box ensemble by {gap[worst]:.1%} at L2 ε={eps[worst]} on {n} "
                "points: the gradients are misleading (gradient masking)", vals)


def pgd_converged(base: dict[str, float], strong: dict[str, float], cfg: SanityConfig = SanityConfig(),
                  detail: str = "") -> Flag:
    """Stronger PGD (more steps and restarts) must change robust accuracy by less than ``convergence_tol``."""
    keys = [k for k in base if k in strong]
    if not keys:
        return Flag("pgd_converged", None, "convergence probe not run")
    diffs = {k: float(base[k] - strong[k]) for k in keys}
    worst = max(keys, key=lambda k: abs(diffs[k]))
    ok = all(abs(d) < cfg.convergence_tol - 1e-9 for d in diffs.values())  # 2 of 100 points is not < 2 points
    msg = (f"stronger PGD ({detail}) changes robust accuracy by at most {abs(diffs[worst]):.1%} (< "
           f"{cfg.convergence_tol:.0%})" if ok else
           f"stronger PGD ({detail}) changes robust accuracy by {diffs[worst]:+.1%} at ε={worst}: the default "
           "budget has not converged; raise --attack-steps")
    return Flag("pgd_converged", bool(ok), msg, {"base": base, "strong": strong, "diff": diffs})


def no_zero_gradients(ce_norms, margin_norms, cfg: SanityConfig = SanityConfig()) -> Flag:
    """Exactly-zero input gradients at clean points mean saturated softmax or a non-differentiable model."""
    ce, mg = _arr(ce_norms), _arr(margin_norms)
    if ce.size == 0:
        return Flag("no_zero_gradients", None, "no points")
    z_ce = float(np.mean(ce == 0))
    z_mg = float(np.mean(mg == 0)) if mg.size else float("nan")
    vals = {"zero_share_ce": z_ce, "zero_share_margin": z_mg, "n": int(ce.size),
            "median_grad_norm_ce": float(np.median(ce)), "median_grad_norm_margin": float(np.median(mg))}
    worst = max(z_ce, z_mg if np.isfinite(z_mg) else 0.0)
    if worst > cfg.zero_grad_max_share:
        if z_mg <= cfg.zero_grad_max_share:
            return Flag("no_zero_gradients", False,
                        f"{z_ce:.1%} of the clean points have an exactly zero cross-entropy input gradient (softmax "
                        f"saturated in float32; median CE gradient norm {vals['median_grad_norm_ce']:.2g}): CE-based "
                        "attacks (FGSM, PGD-CE, APGD-CE) cannot start there and underestimate the attack. The "
                        f"logit-margin gradient is zero on only {z_mg:.1%}, so the margin-based attacks of the "
                        "ensemble (PGD-margin, DeepFool, C&W, FMN, APGD-DLR) are not affected", vals)
        return Flag("no_zero_gradients", False,
                    f"{z_mg:.1%} of the clean points have an exactly zero logit-margin input gradient (CE {z_ce:.1%}): "
                    "the model is not differentiable where it matters (gradient masking); only black-box numbers "
                    "are trustworthy", vals)
    return Flag("no_zero_gradients", True, f"zero input gradients: CE {z_ce:.1%}, margin {z_mg:.1%} of {ce.size} "
                "points", vals)


def crosscheck(ours: dict[str, float], apgd: dict[str, float], n: int, cfg: SanityConfig = SanityConfig()) -> Flag:
    """Our worst-case robust accuracy must not exceed ART APGD's by more than ``crosscheck_tol``."""
    keys = [k for k in ours if k in apgd]
    if not keys or n == 0:
        return Flag("apgd_crosscheck", None, "APGD cross-check not run", {"n": n})
    gaps = {k: float(ours[k] - apgd[k]) for k in keys}
    worst = max(keys, key=lambda k: gaps[k])
    ok = gaps[worst] <= cfg.crosscheck_tol + 1e-9  # exactly 2 of 100 points is not "> 2 points"
    vals = {"ours": ours, "apgd": apgd, "gap": gaps, "n": n}
    if ok:
        return Flag("apgd_crosscheck", True, f"our worst case is within {cfg.crosscheck_tol:.0%} of (or below) ART "
                    f"APGD on {n} points (largest gap {gaps[worst]:+.1%} at ε={worst})", vals)
    return Flag("apgd_crosscheck", False, f"ART APGD finds {gaps[worst]:.1%} more adversarials than our whole ensemble "
                f"at ε={worst} on {n} points: our attacks are too weak", vals)


def any_failed(flags: list[Flag]) -> bool:
    return any(f.ok is False for f in flags)
