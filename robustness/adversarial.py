"""The adversarial part of the bench for one model: the attack ensemble, the reject option, the checks.

:func:`evaluate_adversarial` takes any network returning ``(logits, z)`` (or logits), a fixed sample of test points
and an :class:`AdversarialPlan`, and returns a JSON-ready dict (robust-accuracy curves per attack and worst case,
minimal perturbations, the paper's DeepFool score, reject-option numbers, the ART cross-check and the sanity flags).

Sample tiers (all are prefixes of the same fixed sample, so they nest): cheap attacks (FGSM, PGD) use the first
``n_cheap`` points; expensive minimum-norm attacks (DeepFool, C&W, FMN), the adaptive attack, the probes and the
APGD cross-check the first ``n_expensive``; the black-box attack the first ``n_blackbox``. Attacks run on the
correctly classified points only; robust accuracy is over all points of the tier (a clean error is a failure at
every ε). The **worst case** is per sample, ``any`` over every attack that ran on the point, reported on the
``n_expensive`` prefix where the whole white-box ensemble ran (and, for the cheap attacks alone, on ``n_cheap``).
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
from robustness.attacks import (
    DEFAULT_ATTACKS,
    AttackBudget,
    QueryCountingModel,
    Reliability,
    accepted_mask,
    adaptive_reject_pgd,
    apgd_success,
    forward_all,
    get_spec,
    input_gradient_norms,
    run_attack,
    white_box,
)
from robustness.metrics import robust_accuracy, worst_case


@dataclass
class AdversarialPlan:
    eps_linf: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    n_cheap: int = 200
    n_expensive: int = 100
    n_blackbox: int = 20
    budget: AttackBudget = field(default_factory=AttackBudget)
    adaptive_steps: int = 20
    adaptive_targets: int = 2
    adaptive_lambda: float = 1.0
    large_eps: float = 0.5
    strong_steps_factor: int = 2
    strong_restarts: int = 2
    apgd_steps: int = 40
    apgd_losses: tuple[str, ...] = ("cross_entropy", "difference_logits_ratio")
    headline_linf: float = 0.1
    headline_l2: float = 1.0
    sanity: sanity.SanityConfig = field(default_factory=sanity.SanityConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        d["apgd_losses"] = list(self.apgd_losses)
        return d


def _seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _f(values) -> list[float | None]:
    out = []
    for v in np.asarray(values, dtype=np.float64).reshape(-1):
        out.append(float(v) if np.isfinite(v) else None)
    return out


def _rate(mask: np.ndarray, rows: np.ndarray) -> list[float | None]:
    """Success rate per ε among ``rows`` (the correctly classified points)."""
    if rows.sum() == 0:
        return [None] * mask.shape[0]
    return _f(mask[:, rows].mean(axis=1))


def _pad(mask: np.ndarray, n: int) -> np.ndarray:
    """Restrict / pad (with False = not attacked) a (E, m) mask to (E, n)."""
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


def _at(eps: list[float], curve: list, value: float):
    for e, c in zip(eps, curve, strict=True):
        if abs(e - value) < 1e-12:
            return c
    return None


def evaluate_adversarial(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AdversarialPlan,
    reliability: Reliability | None = None,
    blackbox=None,
    seed: int = 0,
    progress: bool = True,
    label: str = "",
) -> dict:
    """Run the whole adversarial evaluation of ``net`` on the fixed sample ``(x, y)``; returns a JSON-ready dict.

    ``blackbox``: a numpy ``pixels -> logits`` function (the ONNX artifact) for the decision-based attack;
    ``reliability``: the artifact's score as a torch function (enables the reject option and the adaptive attack).
    """
    t_start = time.perf_counter()
    net.eval()
    n_cheap = min(plan.n_cheap, len(x))
    n_exp = min(plan.n_expensive, n_cheap)
    n_bb = min(plan.n_blackbox, n_exp)
    tiers = {"cheap": n_cheap, "expensive": n_exp, "blackbox": n_bb}
    x, y = x[:n_cheap], y[:n_cheap]
    logits, _ = forward_all(net, x)
    correct = (logits.argmax(1) == y).cpu().numpy()
    fm = white_box(net)
    bb = QueryCountingModel(blackbox) if blackbox is not None else None
    eps_of = {"linf": [float(e) for e in plan.eps_linf], "l2": [float(e) for e in plan.eps_l2]}
    x_norm_l2 = x.flatten(1).norm(dim=1).cpu().numpy()

    names = [n for n in plan.attacks if not (get_spec(n).access == "black" and bb is None)]
    skipped = [n for n in plan.attacks if n not in names]
    extra_tasks = ["adaptive"] * (reliability is not None) + ["gradients", "large_eps", "convergence", "apgd"]
    bar = tqdm(total=len(names) + len(extra_tasks), desc=f"attacks {label}".strip(), disable=not progress,
               leave=False)

    masks: dict[str, np.ndarray] = {}  # name -> (E, n_tier) success (False on clean errors)
    masks_acc: dict[str, np.ndarray] = {}  # success AND accepted by the reliability threshold
    attacks_out: dict[str, dict] = {}
    outcomes_min_norm: dict[str, np.ndarray] = {}
    for name in names:
        spec = get_spec(name)
        bar.set_postfix_str(name)
        n_t = tiers[spec.tier]
        rows = correct[:n_t]
        idx = np.flatnonzero(rows)
        eps = eps_of[spec.norm]
        model = bb if spec.access == "black" else fm
        it = torch.as_tensor(idx, device=x.device, dtype=torch.long)
        out = run_attack(spec, model, x[it], y[it], eps, plan.budget, seed=_seed_for(seed, name),
                         keep_advs=reliability is not None)
        full = np.zeros((len(eps), n_t), dtype=bool)
        full[:, idx] = out.success
        masks[name] = full
        entry: dict = {
            "norm": spec.norm, "kind": spec.kind, "access": spec.access, "tier": spec.tier,
            "iterative": spec.iterative, "description": spec.description, "n": int(n_t),
            "n_correct": int(len(idx)), "eps": eps, "success_rate": _rate(full, rows),
            "robust_acc": _f(robust_accuracy(rows, full)), "seconds": round(out.seconds, 3),
        }
        if out.queries is not None:
            entry["queries"] = out.queries
            entry["queries_per_point"] = out.queries / max(len(idx), 1)
        if reliability is not None:
            acc = accepted_mask(net, reliability, out.advs) if len(idx) else np.zeros((len(eps), 0), bool)
            full_acc = np.zeros_like(full)
            full_acc[:, idx] = out.success & acc
            masks_acc[name] = full_acc
            n_succ = out.success.sum(axis=1)
            rejected = np.where(n_succ > 0, (out.success & ~acc).sum(axis=1) / np.maximum(n_succ, 1), np.nan)
            entry["robust_acc_reject"] = _f(robust_accuracy(rows, envelope(full_acc, eps)))
            entry["rejected_share_of_successes"] = _f(rejected)
        if out.min_norm is not None:
            mn = np.full(n_t, np.nan)
            mn[idx] = out.min_norm
            outcomes_min_norm[name] = mn
            found = np.isfinite(out.min_norm)
            entry["min_norm"] = {
                "found_share": float(found.mean()) if len(found) else None,
                "median": float(np.median(out.min_norm)) if len(found) else None,  # inf if most were not found
                "mean_found": float(out.min_norm[found].mean()) if found.any() else None,
            }
            if name == "deepfool_l2" and found.any():
                ratio = out.min_norm[found] / np.maximum(x_norm_l2[idx][found], 1e-12)
                entry["deepfool_score"] = {
                    "mean_r_over_x": float(ratio.mean()), "median_r_over_x": float(np.median(ratio)),
                    "n": int(found.sum()), "definition": "mean over correctly classified points of ||r||_2/||x||_2, "
                    "r = unclipped DeepFool perturbation (Foolbox, overshoot 0.02, box [0,1])",
                }
        del out
        attacks_out[name] = entry
        bar.update(1)

    # ------------------------------------------------------------------ worst case
    rows_exp = correct[:n_exp]
    worst: dict[str, dict] = {}
    for norm, eps in eps_of.items():
        wb = [n for n in masks if get_spec(n).norm == norm and get_spec(n).access == "white"]
        allk = [n for n in masks if get_spec(n).norm == norm]
        cheap = [n for n in wb if get_spec(n).tier == "cheap"]
        if not allk:
            continue
        w_raw = worst_case([_pad(masks[n], n_exp) for n in allk])
        w_all = envelope(w_raw, eps)
        entry = {
            "eps": eps, "n": int(n_exp), "attacks": allk,
            "robust_acc": _f(robust_accuracy(rows_exp, w_all)),
            "robust_acc_raw": _f(robust_accuracy(rows_exp, w_raw)),
            "success_rate": _rate(w_all, rows_exp),
        }
        if wb:
            wbm = envelope(worst_case([_pad(masks[n], n_exp) for n in wb]), eps)
            entry["robust_acc_white_box"] = _f(robust_accuracy(rows_exp, wbm))
        if cheap:
            wc = envelope(worst_case([masks[n] for n in cheap]), eps)
            entry["cheap"] = {"n": int(n_cheap), "attacks": cheap, "robust_acc": _f(robust_accuracy(correct, wc))}
        if reliability is not None:
            wa_raw = worst_case([_pad(masks_acc[n], n_exp) for n in allk])
            wa = envelope(wa_raw, eps)
            entry["robust_acc_reject_naive"] = _f(robust_accuracy(rows_exp, wa))
            fooled = w_raw[:, rows_exp]
            fooled_acc = wa_raw[:, rows_exp]
            n_f = fooled.sum(axis=1)
            entry["rejected_share_of_fooled_points"] = _f(
                np.where(n_f > 0, (fooled & ~fooled_acc).sum(axis=1) / np.maximum(n_f, 1), np.nan))
        mins = [outcomes_min_norm[n][:n_exp] for n in wb if n in outcomes_min_norm and len(outcomes_min_norm[n]) >= n_exp]
        if mins:
            per_point = np.min(np.stack(mins), axis=0)[rows_exp]  # NaN-free: correct points only
            entry["min_norm"] = {
                "attacks": [n for n in wb if n in outcomes_min_norm], "n": int(len(per_point)),
                "median": float(np.median(per_point)) if len(per_point) else None,
                "mean_found": float(per_point[np.isfinite(per_point)].mean()) if np.isfinite(per_point).any() else None,
                "found_share": float(np.isfinite(per_point).mean()) if len(per_point) else None,
                "definition": "per point, the smallest unclipped adversarial perturbation over the white-box "
                              "minimum-norm attacks; median over the correctly classified points",
            }
        worst[norm] = entry

    # ------------------------------------------------------------------ adaptive (reliability-aware) attack
    adaptive: dict | None = None
    if reliability is not None:
        bar.set_postfix_str("adaptive")
        t0 = time.perf_counter()
        idx = np.flatnonzero(rows_exp)
        it = torch.as_tensor(idx, device=x.device, dtype=torch.long)
        broken = adaptive_reject_pgd(net, reliability, x[it], y[it], eps_of["linf"], steps=plan.adaptive_steps,
                                     n_targets=plan.adaptive_targets, lam=plan.adaptive_lambda,
                                     seed=_seed_for(seed, "adaptive"))
        full = np.zeros((len(eps_of["linf"]), n_exp), dtype=bool)
        full[:, idx] = broken
        naive = envelope(worst_case([_pad(masks_acc[n], n_exp) for n in masks_acc if get_spec(n).norm == "linf"]),
                         eps_of["linf"]) if any(get_spec(n).norm == "linf" for n in masks_acc) else np.zeros_like(full)
        adaptive = {
            "eps": eps_of["linf"], "n": int(n_exp), "steps": plan.adaptive_steps, "targets": plan.adaptive_targets,
            "lambda": plan.adaptive_lambda, "reliability": reliability.name, "threshold": reliability.threshold,
            "success_rate": _rate(full, rows_exp),
            "robust_acc_reject_adaptive_only": _f(robust_accuracy(rows_exp, full)),
            "robust_acc_reject_naive_or_adaptive": _f(robust_accuracy(rows_exp, naive | full)),
            "seconds": round(time.perf_counter() - t0, 3),
            "objective": "clamp(max_{j!=t} l_j - l_t, 0) + lambda * (-log reliability_as_if_t); t = each of the "
                         "top wrong classes; success = any iterate misclassified AND accepted",
        }
        bar.update(1)

    # ------------------------------------------------------------------ checks
    flags: list[sanity.Flag] = []
    checks: dict = {}
    scfg = plan.sanity
    # zero gradients at the start points
    bar.set_postfix_str("gradients")
    idx = np.flatnonzero(correct)
    g = input_gradient_norms(net, x[torch.as_tensor(idx, device=x.device, dtype=torch.long)],
                             y[torch.as_tensor(idx, device=x.device, dtype=torch.long)])
    flags.append(sanity.no_zero_gradients(g["ce"], g["margin"], scfg))
    bar.update(1)

    # large-ε probe
    bar.set_postfix_str("large eps")
    idx = np.flatnonzero(rows_exp)
    it = torch.as_tensor(idx, device=x.device, dtype=torch.long)
    pgd_names = [n for n in ("pgd_linf", "pgd_linf_margin") if n in masks]
    if pgd_names and len(idx):
        probe = np.zeros((1, n_exp), dtype=bool)
        for n in pgd_names:
            o = run_attack(get_spec(n), fm, x[it], y[it], [plan.large_eps], plan.budget,
                           seed=_seed_for(seed, n + "/large"), keep_advs=False)
            probe[:, idx] |= o.success
        ra = float(robust_accuracy(rows_exp, probe)[0])
        checks["large_eps"] = {"eps": plan.large_eps, "robust_acc": ra, "attacks": pgd_names, "n": int(n_exp)}
        flags.append(sanity.large_eps(ra, plan.large_eps, int(n_exp), scfg))
    else:
        flags.append(sanity.large_eps(None, plan.large_eps, 0, scfg))
    bar.update(1)

    # convergence: stronger PGD (more steps and restarts) on the cheap-tier points at the headline ε and the most
    # informative ε; "the number" is the PGD family's per-sample worst case (CE and margin loss together)
    bar.set_postfix_str("convergence")
    conv_eps = _convergence_eps(eps_of["linf"], masks, pgd_names, correct, plan.headline_linf)
    strong_budget = replace(plan.budget, pgd_steps=plan.budget.pgd_steps * plan.strong_steps_factor,
                            pgd_restarts=max(2 * plan.budget.pgd_restarts, plan.strong_restarts))
    idx_c = np.flatnonzero(correct)
    it_c = torch.as_tensor(idx_c, device=x.device, dtype=torch.long)
    base, strong, per_attack = {}, {}, {}
    if pgd_names and len(idx_c) and conv_eps:
        cols = [eps_of["linf"].index(e) for e in conv_eps]
        strong_masks = []
        for n in pgd_names:
            o = run_attack(get_spec(n), fm, x[it_c], y[it_c], conv_eps, strong_budget,
                           seed=_seed_for(seed, n + "/strong"), keep_advs=False)
            full = np.zeros((len(conv_eps), n_cheap), dtype=bool)
            full[:, idx_c] = o.success
            strong_masks.append(full)
            ra_b = robust_accuracy(correct, masks[n][cols])
            ra_s = robust_accuracy(correct, full)
            per_attack.update({f"{n}@{e:g}": {"base": float(b), "strong": float(t)}
                               for e, b, t in zip(conv_eps, ra_b, ra_s, strict=True)})
        fam_b = robust_accuracy(correct, worst_case([masks[n][cols] for n in pgd_names]))
        fam_s = robust_accuracy(correct, worst_case(strong_masks))
        base = {f"{e:g}": float(v) for e, v in zip(conv_eps, fam_b, strict=True)}
        strong = {f"{e:g}": float(v) for e, v in zip(conv_eps, fam_s, strict=True)}
    detail = (f"{'+'.join(pgd_names)}: {strong_budget.pgd_steps} steps x {strong_budget.pgd_restarts} restarts vs "
              f"{plan.budget.pgd_steps} x {plan.budget.pgd_restarts}, {int(correct.sum())} points")
    checks["convergence"] = {"eps": conv_eps, "base": base, "strong": strong, "per_attack": per_attack,
                             "detail": detail, "n": int(n_cheap)}
    flags.append(sanity.pgd_converged(base, strong, scfg, detail))
    bar.update(1)

    # iterative >= single step
    if "fgsm" in masks and "pgd_linf" in masks:
        flags.append(sanity.iterative_beats_single_step(
            attacks_out["fgsm"]["success_rate"], attacks_out["pgd_linf"]["success_rate"], eps_of["linf"], scfg))
    else:
        flags.append(sanity.Flag("iterative_ge_single_step", None, "fgsm and pgd_linf not both run"))

    # black-box not stronger than white-box
    bb_names = [n for n in masks if get_spec(n).access == "black"]
    if bb_names:
        rows_bb = correct[:n_bb]
        for n in bb_names:
            spec = get_spec(n)
            wb = [m for m in masks if get_spec(m).norm == spec.norm and get_spec(m).access == "white"]
            if not wb:
                continue
            w = worst_case([_pad(masks[m], n_bb) for m in wb])
            b = _pad(masks[n], n_bb)
            bb_only = (b & ~w)[:, rows_bb].sum(axis=1).tolist()
            checks[f"blackbox_{n}"] = {"n": int(n_bb), "bb_success": _rate(b, rows_bb), "wb_success": _rate(w, rows_bb),
                                       "bb_only_points": bb_only}
            flags.append(sanity.blackbox_not_stronger(
                [v if v is not None else np.nan for v in _rate(b, rows_bb)],
                [v if v is not None else np.nan for v in _rate(w, rows_bb)], eps_of[spec.norm],
                int(rows_bb.sum()), scfg, bb_only))
    else:
        flags.append(sanity.Flag("blackbox_not_stronger", None, "no black-box attack ran"))

    # monotone curves
    curves = {n: attacks_out[n]["robust_acc"] for n in masks if get_spec(n).kind == "fixed"}
    cur_eps = {n: attacks_out[n]["eps"] for n in curves}
    for norm, w in worst.items():
        curves[f"worst_{norm}"] = w["robust_acc_raw"]
        cur_eps[f"worst_{norm}"] = w["eps"]
    curves = {k: [np.nan if v is None else v for v in c] for k, c in curves.items()}
    flags.append(sanity.monotone(curves, cur_eps, scfg,
                                 informational=tuple(n for n in curves if n in masks and not get_spec(n).iterative)))

    # ART APGD cross-check
    bar.set_postfix_str("apgd")
    cc_eps = [e for e in dict.fromkeys([plan.headline_linf, *conv_eps]) if e in eps_of["linf"] and e > 0]
    if "linf" in worst and len(idx) and cc_eps and plan.apgd_losses:
        t0 = time.perf_counter()
        apgd = np.zeros((len(cc_eps), n_exp), dtype=bool)
        per_loss = {}
        for loss in plan.apgd_losses:
            s = apgd_success(net, x[it], y[it], cc_eps, steps=plan.apgd_steps, loss_type=loss,
                             seed=_seed_for(seed, "apgd/" + loss))
            m = np.zeros_like(apgd)
            m[:, idx] = s
            per_loss[loss] = _f(robust_accuracy(rows_exp, m))
            apgd |= m
        cols = [eps_of["linf"].index(e) for e in cc_eps]
        ours_mask = worst_case([_pad(masks[n], n_exp) for n in worst["linf"]["attacks"]])[cols]
        ours = {f"{e:g}": float(v) for e, v in zip(cc_eps, robust_accuracy(rows_exp, ours_mask), strict=True)}
        theirs = {f"{e:g}": float(v) for e, v in zip(cc_eps, robust_accuracy(rows_exp, apgd), strict=True)}
        union = {f"{e:g}": float(v) for e, v in zip(cc_eps, robust_accuracy(rows_exp, apgd | ours_mask), strict=True)}
        checks["apgd"] = {"eps": cc_eps, "n": int(n_exp), "steps": plan.apgd_steps, "losses": list(plan.apgd_losses),
                          "robust_acc_apgd": theirs, "robust_acc_apgd_per_loss": per_loss,
                          "robust_acc_ours": ours, "robust_acc_union": union,
                          "seconds": round(time.perf_counter() - t0, 3)}
        flags.append(sanity.crosscheck(ours, theirs, int(n_exp), scfg))
    else:
        flags.append(sanity.Flag("apgd_crosscheck", None, "APGD cross-check not run"))
    bar.update(1)
    bar.close()

    headline = {
        "linf_eps": plan.headline_linf,
        "robust_acc_linf": _at(eps_of["linf"], worst["linf"]["robust_acc"], plan.headline_linf) if "linf" in worst else None,
        "l2_eps": plan.headline_l2,
        "robust_acc_l2": _at(eps_of["l2"], worst["l2"]["robust_acc"], plan.headline_l2) if "l2" in worst else None,
    }
    if reliability is not None and "linf" in worst:
        headline["robust_acc_linf_reject_naive"] = _at(eps_of["linf"], worst["linf"]["robust_acc_reject_naive"],
                                                       plan.headline_linf)
        if adaptive is not None:
            headline["robust_acc_linf_reject_adaptive"] = _at(
                eps_of["linf"], adaptive["robust_acc_reject_naive_or_adaptive"], plan.headline_linf)
    for norm in ("linf", "l2"):
        if norm in worst and "min_norm" in worst[norm]:
            headline[f"median_min_{norm}"] = worst[norm]["min_norm"]["median"]
    if "deepfool_l2" in attacks_out and "deepfool_score" in attacks_out["deepfool_l2"]:
        headline["deepfool_score"] = attacks_out["deepfool_l2"]["deepfool_score"]["mean_r_over_x"]
    return {
        "n": {"cheap": int(n_cheap), "expensive": int(n_exp), "blackbox": int(n_bb)},
        "clean_acc": {"cheap": float(correct.mean()) if n_cheap else None,
                      "expensive": float(rows_exp.mean()) if n_exp else None},
        "eps": eps_of,
        "attacks": attacks_out,
        "skipped_attacks": skipped,
        "worst_case": worst,
        "adaptive": adaptive,
        "checks": checks,
        "flags": [f.to_dict() for f in flags],
        "headline": headline,
        "seconds": round(time.perf_counter() - t_start, 3),
    }


def _convergence_eps(eps: list[float], masks: dict, pgd_names: list[str], correct: np.ndarray,
                     headline: float) -> list[float]:
    """The headline ε (if on the grid) and the grid ε where PGD's robust accuracy is closest to half the clean one."""
    out = [headline] if headline in eps else []
    if pgd_names and correct.any():
        w = worst_case([masks[n] for n in pgd_names])
        ra = robust_accuracy(correct, w)
        target = correct.mean() / 2
        cands = [(abs(ra[k] - target), e) for k, e in enumerate(eps) if e > 0]
        if cands:
            best = min(cands)[1]
            if best not in out:
                out.append(best)
    return out
