"""The report's section on ``--onnx`` graphs: black-box figures, each an upper bound (:mod:`robustness.onnx_bench`)."""

from __future__ import annotations


def _ub(d: dict | None) -> str:
    """``≤ value [95% CI]`` in percent, or ``–``."""
    if not d or d.get("value") is None:
        return "–"
    return f"≤ {100 * d['value']:.0f} [{100 * d['ci95'][0]:.0f}, {100 * d['ci95'][1]:.0f}]"


def _auroc(d: dict | None) -> str:
    if not d:
        return "–"
    ci = d.get("auroc_ci95")
    return f"{d['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _rows(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (no blank line after it)."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _robustness_table(models: dict, hl: float, h2: float) -> list[str]:
    head = [
        "graph",
        "test acc %",
        "clean acc (sample) %",
        f"Square L∞ {hl:g} %",
        f"Square + HopSkipJump L2 {h2:g} %",
        "HopSkipJump median L2",
        "queries",
        "sanity",
    ]
    rows = []
    for lbl, e in models.items():
        fails = [f["name"] for f in e["flags"] if f["ok"] is False]
        rows.append(
            [
                lbl,
                f"{100 * e['test_acc']:.1f}",
                _ub(e["clean_acc"]).removeprefix("≤ "),
                _ub(e["robust"].get("linf")),
                _ub(e["robust"].get("l2")),
                f"{e['hopskipjump']['median_min_l2']:.3g}"
                if e["hopskipjump"]["median_min_l2"] is not None
                else "–",
                f"{e['queries']:,}",
                "FAILED: " + ", ".join(fails) if fails else "ok",
            ]
        )
    return _rows(head, rows)


def _reject_table(models: dict, hl: float, h2: float) -> list[str]:
    head = [
        "graph",
        "reject option",
        "threshold (95% val accept; score units)",
        "ID accept %",
        "ID acc accepted %",
        f"robust & accepted L∞ {hl:g} %",
        f"robust & accepted L2 {h2:g} %",
    ]
    rows = [
        [
            lbl,
            opt,
            f"{r['threshold']:.4g}",
            f"{100 * r['id_accept_rate']:.1f}",
            f"{100 * r['id_acc_accepted']:.1f}" if r["id_acc_accepted"] is not None else "–",
            _ub(r["linf"]),
            _ub(r["l2"]),
        ]
        for lbl, e in models.items()
        for opt, r in e["reject"].items()
    ]
    return [
        "",
        *_rows(head, rows),
        "",
        "*Robust & accepted*: correctly classified and no attack found an input in the ε-ball that is "
        "misclassified AND accepted (Square targeted at every wrong class; HopSkipJump from an accepted point "
        "of another class). Scores: max_softmax as log p − log(1 − p) of the top class, energy as "
        "logsumexp of the logits, max_logit as the largest logit; accepted when the score is at least the "
        "threshold.",
        "",
    ]


def _ood_table(results: dict, models: dict) -> list[str]:
    found = {s for e in models.values() for s in e["ood"]}
    sets = [s for s in results.get("ood_sets", {}) if s in found] + sorted(
        found - set(results.get("ood_sets", {}))
    )
    rows = [
        [lbl, det, *(_auroc(e["ood"].get(s, {}).get(det)) for s in sets)]
        for lbl, e in models.items()
        for det in e["reject"]
    ]
    return ["OOD AUROC [95% bootstrap CI] from the logits:", "", *_rows(["graph", "detector", *sets], rows)]


def blackbox_section(results: dict) -> list[str]:
    """Markdown: robustness, reject options and OOD detection of every ``--onnx`` graph."""
    models = results.get("blackbox") or {}
    if not models:
        return []
    a = results["config"]["adversarial"]
    hl, h2 = a["headline_linf"], a["headline_l2"]
    lines = [
        "## ONNX graphs benched from their outputs alone (black-box upper bounds)",
        "",
        "Only the graph's logits were queried (Square: score-based, HopSkipJump: decision-based). A white-box "
        "attack can only find more adversarials, so every robust figure below is an **upper bound** (≤); it "
        "is not a measure of robustness comparable with a white-box figure.",
        "",
    ]
    lines += _robustness_table(models, hl, h2) + _reject_table(models, hl, h2) + _ood_table(results, models)
    return [*lines, ""]
