"""The plain-language summary at the top of report.md: what was measured, on which models, the answer with its
95% intervals, which model did best, and every failed sanity flag by name (computed from results.json alone)."""

from __future__ import annotations

from robustness.stats import proportion

MAIN_VARIANT = "bin_enc"
NO_REJECT = "no reject option"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _fig(d: dict | None) -> str:
    """``12.0% [6.4, 20.8]``."""
    if not d or d.get("value") is None:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{_pct(d['value'])} [95% CI {100 * lo:.1f}, {100 * hi:.1f}]"


def _served_reject(e: dict) -> tuple[str | None, dict | None]:
    """The reject option the ONNX file serves and its adaptive-attack figure at the headline L∞ ε."""
    reject = e["adversarial"]["headline"].get("reject") or {}
    for opt, by_norm in reject.items():
        if e.get("reject_options", {}).get(opt, {}).get("served", True):
            return opt, by_norm.get("linf")
    return None, None


def _rejects_unfamiliar(e: dict, ood_sets: dict) -> tuple[dict | None, dict[str, float]]:
    """Pooled share of OOD images rejected at the calibrated threshold (with its interval), and the share per set."""
    per_set, k, n = {}, 0, 0
    for s, v in e.get("ood", {}).items():
        rate, size = v.get("accept_rate_at_threshold"), (ood_sets.get(s) or {}).get("n")
        if rate is None or not size:
            continue
        per_set[s] = 1 - rate
        k += round((1 - rate) * size)
        n += size
    return (proportion(k, n) if n else None), per_set


def _own_data(e: dict) -> dict | None:
    c = e.get("calibration") or {}
    if c.get("accept_rate") is None or not c.get("n"):
        return None
    return proportion(round(c["accept_rate"] * c["n"]), c["n"])


def _overlaps(a: dict, b: dict) -> bool:
    return a["ci95"][0] <= b["ci95"][1] and b["ci95"][0] <= a["ci95"][1]


def _best(figures: dict[str, dict | None]) -> str:
    """``m (figure), clear of every other model's interval`` or ``a and b (figure); ... overlaps ...``."""
    known = {m: f for m, f in figures.items() if f and f.get("value") is not None}
    if not known:
        return "no model has a figure"
    top_value = max(f["value"] for f in known.values())
    top = [m for m, f in known.items() if f["value"] == top_value]
    close = [m for m in known if m not in top and _overlaps(known[m], known[top[0]])]
    tail = (
        (
            f"; the interval overlaps that of {', '.join(close)}, so this bench does not separate them (paired "
            "comparisons below)"
        )
        if close
        else ", clear of every other model's interval"
    )
    return f"{' and '.join(top)} ({_fig(known[top[0]])}{tail})"


def summary_sentences(results: dict) -> list[str]:
    """Five sentences; a sixth, in bold, names every failed sanity flag."""
    models, cfg = results.get("models") or {}, results["config"]
    if not models:
        return ["No model was measured (see *Models not measured* below)."]
    eps = cfg["adversarial"]["headline_linf"]
    ood_sets = results.get("ood_sets") or {}
    main = next((m for m, e in models.items() if e.get("variant") == MAIN_VARIANT), next(iter(models)))
    others = [m for m in models if m != main]
    e = models[main]
    scores = {m: _served_reject(models[m])[0] for m in models}
    rejected, per_set = _rejects_unfamiliar(e, ood_sets)
    opt, adaptive = _served_reject(e)
    out = [
        f"This bench measured {len(models)} {cfg['dataset']} classifier{'s' if len(models) > 1 else ''} "
        f"({cfg['backbone']} backbone, {cfg['profile']} profile) three ways: how much of their own test data they "
        f"accept, how many images of {len(ood_sets)} unfamiliar kinds ({', '.join(ood_sets)}) they reject, and how "
        f"often they stay correct under adversarial attack (L∞ ε {eps:g}, the worst case over every attack).",
        f"The main model is {main} (variant {e.get('variant')}, reject option: {scores[main] or NO_REJECT})"
        + (
            f"; the baselines are {', '.join(f'{m} ({scores[m] or NO_REJECT})' for m in others)}"
            if others
            else ""
        )
        + ", each judged by the score its ONNX file serves at its calibrated threshold.",
    ]
    sentence = (
        f"{main} accepts {_fig(_own_data(e))} of its own test images and rejects {_fig(rejected)} of the "
        "unfamiliar ones"
    )
    if per_set:
        lo, hi = min(per_set, key=per_set.get), max(per_set, key=per_set.get)
        sentence += (
            f" (pooled over the sets: from {_pct(per_set[lo])} of {lo} to {_pct(per_set[hi])} of {hi})"
        )
    out.append(sentence + ".")
    robust = e["adversarial"]["headline"].get("robust_acc_linf")
    sentence = (
        f"Under attack at L∞ ε {eps:g} it stays correct on {_fig(robust)} of {(robust or {}).get('n', '?')} "
        "test points"
    )
    if opt:
        sentence += (
            f", and correct and accepted on {_fig(adaptive)} when an adaptive attack also targets its "
            f"reject option ({opt})"
        )
    failed = [
        f"{m} / {f['name']}"
        for m, me in models.items()
        for f in me["adversarial"]["flags"]
        if f["ok"] is False
    ]
    out.append(
        sentence + ("" if failed else "; every sanity check of the attacks passed (details at the end)") + "."
    )
    unfamiliar = {m: _rejects_unfamiliar(models[m], ood_sets)[0] for m in models}
    attacked = {
        m: _served_reject(models[m])[1] or models[m]["adversarial"]["headline"].get("robust_acc_linf")
        for m in models
    }
    out.append(
        f"Best at rejecting unfamiliar images: {_best(unfamiliar)}; best under attack (correct and accepted "
        f"under the adaptive attack): {_best(attacked)}."
    )
    if failed:
        out.append(
            f"**Sanity flags FAILED: {', '.join(failed)}**: the robustness figures of "
            f"{'this model' if len({x.split(' / ')[0] for x in failed}) == 1 else 'these models'} are suspect "
            "(details under *Sanity flags* at the end)."
        )
    return out


def summary_section(results: dict) -> list[str]:
    """The ``## Summary`` lines of report.md."""
    return ["## Summary", "", " ".join(summary_sentences(results)), ""]
