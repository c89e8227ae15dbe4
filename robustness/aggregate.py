"""Across models: mean ± std over seeds per variant, and paired comparisons on the same test points.

Every model of a bench is attacked on the same points, so two models are compared with the exact McNemar test on
the points where exactly one of them stays robust (:func:`robustness.stats.mcnemar`).
"""

from __future__ import annotations

import numpy as np

from robustness.stats import mcnemar

REFERENCE = "bin_enc"


def _mean_std(values: list) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _value(h: dict, *keys):
    for k in keys:
        h = h.get(k) if isinstance(h, dict) else None
    return h.get("value") if isinstance(h, dict) else h


def headline_points(entry: dict) -> dict[str, np.ndarray]:
    """Per headline figure of a model, the robust (1) / broken (0) outcome of every sample point."""
    h = entry["adversarial"]["headline"]
    out = {}
    for norm in ("linf", "l2"):
        if f"robust_acc_{norm}" in h:
            out[f"robust_{norm}"] = np.asarray(h[f"robust_acc_{norm}"]["robust_points"], bool)
        for opt, by_norm in h.get("reject", {}).items():
            if norm in by_norm:
                out[f"reject_{norm}[{opt}]"] = np.asarray(by_norm[norm]["robust_points"], bool)
    return out


def _variant_stats(entries: list[dict]) -> dict:
    h = [e["adversarial"]["headline"] for e in entries]
    sets = sorted({s for e in entries for s in e["ood"]})
    out = {
        "seeds": [e["seed"] for e in entries],
        "test_acc": _mean_std([e["test_acc"] for e in entries]),
        "robust_acc_linf": _mean_std([_value(x, "robust_acc_linf") for x in h]),
        "robust_acc_l2": _mean_std([_value(x, "robust_acc_l2") for x in h]),
        "deepfool_score": _mean_std([x.get("deepfool_score") for x in h]),
        "paper_deepfool": _mean_std(
            [(e["adversarial"].get("paper_deepfool") or {}).get("mean_r_over_x") for e in entries]
        ),
        "median_min_l2": _mean_std([x.get("median_min_l2") for x in h]),
        "median_min_linf": _mean_std([x.get("median_min_linf") for x in h]),
        "ood_auroc_reliability": {
            s: _mean_std([e["ood"][s]["reliability"]["auroc"] for e in entries if s in e["ood"]])
            for s in sets
        },
    }
    for opt in sorted({o for x in h for o in x.get("reject", {})}):
        for norm in ("linf", "l2"):
            out[f"reject_{norm}[{opt}]"] = _mean_std([_value(x, "reject", opt, norm) for x in h])
    for det in ("reliability", "max_softmax", "mahalanobis"):
        out[f"misclassification_auroc_{det}"] = _mean_std(
            [e["misclassification"].get(det, {}).get("misclassification_auroc") for e in entries]
        )
        out[f"mean_ood_auroc_{det}"] = _mean_std(
            [
                float(np.mean([v[det]["auroc"] for v in e["ood"].values() if det in v])) if e["ood"] else None
                for e in entries
            ]
        )
    return out


def aggregate(models: dict) -> dict:
    """Per variant: mean ± std over seeds of the headline numbers."""
    by_variant: dict[str, list[dict]] = {}
    for e in models.values():
        by_variant.setdefault(e["variant"], []).append(e)
    return {variant: _variant_stats(entries) for variant, entries in by_variant.items()}


def compare_entries(a: dict, b: dict) -> list[dict]:
    """McNemar of two models' entries on every pair of headline figures of the same kind (same points).

    The reject-option figures are compared across options too (bin_enc's vertex score against no_pen's max-softmax
    or lin_pen's Mahalanobis ablation), since both are "robust and accepted" outcomes on the same points.
    """
    return compare_points(a["label"], headline_points(a), b["label"], headline_points(b))


def compare_points(
    label_a: str, points_a: dict[str, np.ndarray], label_b: str, points_b: dict[str, np.ndarray]
) -> list[dict]:
    """:func:`compare_entries` on :func:`headline_points` already taken (one McNemar per pair of the same kind)."""
    rows = []
    for ka, pa in points_a.items():
        kind = ka.split("[")[0]
        for kb, pb in points_b.items():
            if kb.split("[")[0] == kind and len(pa) == len(pb):
                rows.append({"a": label_a, "b": label_b, "figure_a": ka, "figure_b": kb, **mcnemar(pa, pb)})
    return rows


def paired_comparisons(models: dict, reference: str = REFERENCE) -> list[dict]:
    """:func:`compare_entries` of the reference variant against every other model of the same seed."""
    return [
        row
        for ref in models.values()
        if ref["variant"] == reference
        for other in models.values()
        if other["variant"] != reference and other["seed"] == ref["seed"]
        for row in compare_entries(ref, other)
    ]
