"""CCAT's confidence-thresholded robust error (Stutz, Hein & Schiele, ICML 2020) for every reject option.

The threshold ``τ`` keeps 99% of the correctly classified clean *validation* points (99% true-positive rate; the
option's own reliability is the confidence). On the bench's test points (the expensive tier), with ``x̃`` the
attack's point (the adversarial it found, or ``x`` itself when it found none) and ``pass(x) = reliability(x) >= τ``:

    RErr = Σ max(1[f(x)≠y]·pass(x), 1[f(x̃)≠y]·pass(x̃)) / Σ max(pass(x), pass(x̃))

— the share of wrong-and-accepted outcomes among the points where the clean or the adversarial input passes; and
the clean ``Err = Σ 1[f(x)≠y]·pass(x) / Σ pass(x)``. The adversarials come from the adaptive attack
(:func:`robustness.adaptive.adaptive_attack`) run against the option at ``τ``, every success confirmed by the served
graph at ``τ`` when the option has one; when ``τ`` is at most the option's own threshold, a point already broken
at that threshold (misclassified and accepted there, so accepted at ``τ``) counts without another attack. Intervals:
95% Wilson over the denominator's points.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from robustness.adaptive import AdaptiveBudget, adaptive_attack
from robustness.attacks import logits_and_z
from robustness.reject_option import RejectOption, graph_confirm
from robustness.stats import proportion
from training.inference import forward_batches

CCAT_TPR = 0.99


def ccat_threshold(reliability: np.ndarray, correct: np.ndarray, tpr: float = CCAT_TPR) -> float:
    """The largest threshold that accepts at least ``tpr`` of the correctly classified points."""
    r = np.sort(np.asarray(reliability, dtype=np.float64)[np.asarray(correct, bool)])
    if not len(r):
        return 0.0
    return float(r[int(np.floor((1.0 - tpr) * len(r)))])


def confidence_thresholded(
    wrong: np.ndarray, clean_pass: np.ndarray, fooled: np.ndarray
) -> tuple[dict, dict]:
    """(clean Err, RErr) as :func:`robustness.stats.proportion` dicts; ``fooled``: the attack's point is wrong and
    passes (False where it found none, so ``x̃ = x``)."""
    num = (wrong & clean_pass) | fooled
    den = clean_pass | fooled
    return proportion(int((wrong & clean_pass).sum()), int(clean_pass.sum())), proportion(
        int(num.sum()), int(den.sum())
    )


def validation_features(
    net: nn.Module, images: np.ndarray, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, z)`` of the validation images, computed once per model for every option."""
    return forward_batches(net, images, 512, device)


def ccat_figures(
    net: nn.Module,
    option: RejectOption,
    val: tuple[np.ndarray, np.ndarray],
    val_labels: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    broken: dict[str, np.ndarray],
    eps: dict[str, float],
    budget: AdaptiveBudget,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """CCAT's figures of ``option`` on the points ``(x, y)`` at ``eps[norm]`` per norm; ``val``: the validation
    ``(logits, z)`` (:func:`validation_features`); ``broken[norm]``: per point, misclassified-and-accepted at the
    option's own threshold by any attack (the bench's reject worst case)."""
    with torch.no_grad():
        rel_val = (
            option.score(torch.from_numpy(val[0]).to(device), torch.from_numpy(val[1]).to(device))
            .reliability.cpu()
            .numpy()
        )
    pred_val = val[0].argmax(1)
    tau = ccat_threshold(rel_val, pred_val == val_labels)
    at_tau = RejectOption(
        option.name,
        option.score,
        tau,
        graph_confirm(option.graph, tau) if option.graph is not None else None,
        option.graph,
    )
    with torch.no_grad():
        logits, z = logits_and_z(net, x)
        wrong = (logits.argmax(1) != y).cpu().numpy()
        clean_pass = option.score.accepted(logits, z, tau).cpu().numpy()
    out: dict = {
        "tau": tau,
        "tpr": CCAT_TPR,
        "n_val_correct": int((pred_val == val_labels).sum()),
        "val_accept_rate": float((rel_val >= tau).mean()),
        "n": int(len(x)),
        "confirmed_by_served_graph": option.graph is not None,
    }
    out["err_clean"], _ = confidence_thresholded(wrong, clean_pass, np.zeros_like(wrong))
    for norm, e in eps.items():
        fooled = np.zeros(len(x), dtype=bool)
        if tau <= option.threshold:
            fooled |= np.asarray(broken[norm], bool) & ~wrong
        todo = np.flatnonzero(~wrong & ~fooled)
        seed_n = seed + zlib.crc32(f"ccat/{option.name}/{norm}".encode()) % 100_000
        res = adaptive_attack(net, at_tau, x[todo], y[todo], [e], norm, budget, seed=seed_n)
        fooled[todo] |= res.success[0]
        _, rerr = confidence_thresholded(wrong, clean_pass, fooled)
        out[norm] = {
            "eps": e,
            "rerr": rerr,
            "attacked": int(len(todo)),
            "unconfirmed": res.unconfirmed,
            "reused_from_own_threshold": bool(tau <= option.threshold),
        }
    return out


def _ci(d: dict | None) -> str:
    if not d or d.get("value") is None:
        return "–"
    return f"{100 * d['value']:.1f} [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}]"


def reject_options_section(results: dict) -> list[str]:
    """Markdown: every model's reject options at the headline ε, with CCAT's figures."""
    rows = []
    for lbl, e in results.get("models", {}).items():
        adv = e["adversarial"]
        for opt, by_norm in adv["headline"].get("reject", {}).items():
            c = adv.get("ccat", {}).get(opt, {})
            rows.append(
                [
                    lbl,
                    opt,
                    f"{e.get('reject_options', {}).get(opt, {}).get('threshold', float('nan')):.4g}",
                    _ci(by_norm.get("linf")),
                    _ci(by_norm.get("l2")),
                    f"{c['tau']:.4g}" if c else "–",
                    _ci(c.get("err_clean")),
                    _ci(c.get("linf", {}).get("rerr")),
                    _ci(c.get("l2", {}).get("rerr")),
                ]
            )
    if not rows:
        return []
    a = results["config"]["adversarial"]
    head = [
        "model",
        "reject option",
        "threshold (95% val accept)",
        f"robust & accepted, L∞ {a['headline_linf']:g} % [95% CI]",
        f"robust & accepted, L2 {a['headline_l2']:g} %",
        "CCAT τ (99% TPR)",
        "CCAT Err clean %",
        f"CCAT RErr L∞ {a['headline_linf']:g} %",
        f"CCAT RErr L2 {a['headline_l2']:g} %",
    ]
    lines = ["## Reject options and CCAT's confidence-thresholded robust error", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]
    return lines + [
        "",
        "*Robust & accepted*: correctly classified and no attack found a point in the ε-ball that is "
        "misclassified AND accepted at the option's threshold. *CCAT*: τ keeps 99% of the correctly "
        "classified validation points; RErr = wrong-and-accepted among the points where the clean or the "
        "adversarial input is accepted at τ (Stutz et al. 2020), adversarials from the adaptive attack "
        "at τ (lower is better).",
        "",
    ]
