"""report.md's sections on reliability: OOD detection, misclassification detection and selective classification
(with the risk guarantee), latent geometry and the artifacts."""

from __future__ import annotations

from robustness.report_format import artifact_name, num, pct, table


def ood_section(results: dict) -> list[str]:
    models, sets = results["models"], list(results.get("ood_sets", {}))
    lines = ["## OOD detection: models × OOD sets × methods", ""]
    lines += [
        "OOD sets: "
        + "; ".join(f"**{s}** ({v['source']}, n={v['n']})" for s, v in results["ood_sets"].items())
        + (
            ""
            if not results.get("skipped_ood_sets")
            else "; skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped_ood_sets"].items())
        ),
        "",
    ]
    lines += [
        "`reliability` is the artifact's served score (bin_enc: vertex distance; baselines: max-softmax computed in "
        "float32, which saturates at exactly 1.0 for confident inputs, so many ties); `max_softmax` is the same "
        "quantity recomputed in float64 from the logits.",
        "",
    ]
    for metric, title in (
        ("auroc", "AUROC"),
        ("fpr95", "FPR at 95% ID acceptance (lower is better)"),
        ("aupr_in", "AUPR-in (ID positive)"),
        ("aupr_out", "AUPR-out (OOD positive)"),
    ):
        rows = []
        for lbl, e in models.items():
            methods = [m for m in next(iter(e["ood"].values()), {}) if m != "accept_rate_at_threshold"]
            rows += [[lbl, m] + [num(e["ood"][s][m][metric]) for s in sets if s in e["ood"]] for m in methods]
        lines += [f"### {title}", ""] + table(["model", "method", *sets], rows)
    rows = [
        [lbl, pct(e["calibration"]["accept_rate"])]
        + [pct(e["ood"][s]["accept_rate_at_threshold"]) for s in sets if s in e["ood"]]
        for lbl, e in models.items()
    ]
    return (
        lines
        + ["### Accept rate (%) at the artifact's calibrated threshold", ""]
        + table(["model", "ID test", *sets], rows)
    )


def _misclassification_table(models: dict) -> list[str]:
    rows = [
        [lbl, m, num(v["misclassification_auroc"]), num(v["aurc"], ".4f"), num(v["e_aurc"], ".4f")]
        for lbl, e in models.items()
        for m, v in e["misclassification"].items()
    ]
    return table(["model", "score", "misclf. AUROC", "AURC", "E-AURC"], rows)


def _calibration_table(models: dict) -> list[str]:
    rows = [
        [
            lbl,
            pct(c["acc"]),
            num(c["ece_max_softmax"], ".4f"),
            num(c["ece_reliability"], ".4f"),
            num(c["threshold"], ".4g"),
            pct(c["accept_rate"]),
            pct(c["acc_accepted"]),
            pct(c["acc_rejected"]),
        ]
        for lbl, e in models.items()
        for c in [e["calibration"]]
    ]
    return table(
        [
            "model",
            "acc %",
            "ECE (max-softmax)",
            "ECE (reliability)",
            "threshold",
            "accept %",
            "acc accepted %",
            "acc rejected %",
        ],
        rows,
    )


def _guarantee_table(models: dict) -> list[str]:
    """The risk guarantee of the artifacts exported with one (nothing when none was)."""
    rows = [
        [
            lbl,
            f"{pct(g['alpha'])} at δ {g['delta']:g}",
            pct(g["upper_bound_at_threshold"]),
            f"{pct(g['selective_risk'])} [{pct(g['selective_risk_ci95'][0])}, {pct(g['selective_risk_ci95'][1])}]",
            f"{g['errors_accepted']} / {g['accepted']}",
            pct(g["coverage"]),
            pct(g["calibration_coverage"]),
        ]
        for lbl, e in models.items()
        for g in [e.get("guarantee")]
        if g and g.get("selective_risk") is not None
    ]
    if not rows:
        return []
    return [
        "Risk guarantee (artifacts exported with `--target-risk`): certified on the calibration split, "
        "realized on the ID test points",
        "",
    ] + table(
        [
            "model",
            "certified error % among accepted ≤",
            "bound % at threshold",
            "realized error % [95%]",
            "errors / accepted",
            "coverage %",
            "calibration coverage %",
        ],
        rows,
    )


def selective_section(results: dict) -> list[str]:
    """Misclassification detection, calibration and selective classification on the ID test points."""
    models = results["models"]
    return (
        ["## Misclassification detection, calibration, selective classification (ID test)", ""]
        + _misclassification_table(models)
        + _calibration_table(models)
        + _guarantee_table(models)
    )


def geometry_section(results: dict) -> list[str]:
    rows = [
        [
            lbl,
            str(g.get("latent_width")),
            str(g.get("bimodal_dims", "–")),
            num(g.get("test_same_encoding")),
            str(g.get("test_distinct_class_codes", "–")),
            num(g.get("test_nc1"), ".4g"),
        ]
        for lbl, e in results["models"].items()
        for g in [e["geometry"]]
    ]
    return ["## Latent geometry (from each run's metrics.json)", ""] + table(
        ["model", "latent width", "bimodal dims", "same encoding", "distinct codes", "NC1"], rows
    )


def artifacts_section(results: dict) -> list[str]:
    rows = [
        [
            lbl,
            f"`{artifact_name(e['artifact']['path'])}`",
            e["artifact"]["score"],
            num(e["artifact"]["threshold"], ".4g"),
            num(e["artifact"]["parity_with_torch"]["max_abs_diff_reliability"], ".2g"),
            e["run_status"],
        ]
        for lbl, e in results["models"].items()
    ]
    return ["## Artifacts", ""] + table(
        ["model", "artifact", "score", "threshold", "max |Δ reliability| torch vs ONNX", "run"], rows
    )
