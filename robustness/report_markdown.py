"""report.md of a bench run: the summary on top (:mod:`robustness.summary`), then one section per figure family."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from robustness.ccat import reject_options_section
from robustness.onnx_report import blackbox_section
from robustness.summary import summary_section


def pct(v, digits: int = 1) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.{digits}f}"


def num(v, fmt: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "–"
    return format(v, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _flags_section(models: dict) -> list[str]:
    names: list[str] = []
    for e in models.values():
        for f in e["adversarial"]["flags"]:
            if f["name"] not in names:
                names.append(f["name"])
    failed = [(lbl, f) for lbl, e in models.items() for f in e["adversarial"]["flags"] if f["ok"] is False]
    lines = ["## Sanity flags", ""]
    if failed:
        lines += [
            "> **WARNING: SANITY FLAGS FAILED — the robustness numbers below are suspect for these models.**",
            ">",
        ]
        lines += [f"> - **{lbl} / {f['name']}**: {f['message']}" for lbl, f in failed]
        lines.append("")
    else:
        lines += ["All sanity flags pass.", ""]
    rows = []
    for lbl, e in models.items():
        st = {f["name"]: f for f in e["adversarial"]["flags"]}
        rows.append(
            [lbl]
            + [("**FAIL**" if st[n]["ok"] is False else st[n]["status"]) if n in st else "–" for n in names]
        )
    lines += _table(["model", *names], rows)
    lines += ["Details:", ""]
    for lbl, e in models.items():
        for f in e["adversarial"]["flags"]:
            lines.append(f"- {lbl} / {f['name']} ({f['status']}): {f['message']}")
    return lines + [""]


def ci(d: dict | None) -> str:
    """``12.0 [6.4, 20.8]`` for a proportion with its 95% interval (percent)."""
    if not d or d.get("value") is None:
        return "–"
    return f"{pct(d['value'])} [{pct(d['ci95'][0])}, {pct(d['ci95'][1])}]"


def artifact_name(path: str) -> str:
    """``RUN/model.onnx``: the run directory's name and the file, never a machine path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def _header(results: dict) -> list[str]:
    cfg, env = results["config"], results["environment"]
    return [
        "# Robustness bench report",
        "",
        f"Command: `{cfg['command']}`",
        "",
        f"Created {results['created_at']}; schema {results['schema']['name']} v{results['schema']['version']}; "
        f"total wall time **{results['seconds_total']:.0f} s** on {env.get('cpu_count')} CPU cores "
        f"({env.get('torch_threads')} torch threads, device {cfg['device']}); load average at start "
        f"{env.get('loadavg_start')}, at end {env.get('loadavg_end')} (the machine may be shared); torch "
        f"{env.get('torch')}, Foolbox {env.get('foolbox')}, torchattacks {env.get('torchattacks')}.",
        "",
    ]


def _unmeasured(results: dict) -> list[str]:
    gone = results.get("unmeasured") or {}
    if not gone:
        return []
    return [
        "## Models not measured",
        "",
        "These runs were requested but have no served score, so nothing below "
        "includes them (the bench exits with status 4):",
        "",
    ] + _table(
        ["model", "run", "reason"], [[lbl, f"`{e['run_dir']}`", e["reason"]] for lbl, e in gone.items()]
    )


def _budgets(results: dict) -> list[str]:
    cfg = results["config"]
    a, b = cfg["adversarial"], cfg["adversarial"]["budget"]
    ad = a["adaptive"]
    n = next(iter(results["models"].values()))["adversarial"]["n"] if results["models"] else {}

    def grid(which):
        return ", ".join(f"{e:g}" for e in which) if which else "the whole grid"

    return [
        "### Sample counts and budgets",
        "",
        f"- dataset **{cfg['dataset']}**, backbone {cfg['backbone']}, profile {cfg['profile']}"
        f"{' (thorough)' if cfg.get('thorough') else ''}, bench seed {cfg['seed']}; the same test points for "
        "every model.",
        f"- FGSM and PGD (stable CE and margin, L∞ and L2): **{n.get('cheap')}** test points; minimum-norm "
        f"attacks, AutoAttack components, adaptive attack, probes: the first **{n.get('expensive')}**; "
        f"HopSkipJump (black-box, ONNX graph): the first **{n.get('blackbox')}**. Attacks run on the correctly "
        "classified points; robust accuracy counts clean errors as failures. Intervals: 95% Wilson.",
        f"- PGD {b['pgd_steps']} steps × {b['pgd_restarts']} restart(s), step 2.5ε/steps; DeepFool ≤"
        f"{b['deepfool_steps']} steps; C&W {b['cw_binary_steps']}×{b['cw_steps']}; FMN {b['fmn_steps']}; "
        f"HopSkipJump {b['hsj_steps']} iterations; APGD-CE / APGD-T {b['apgd_steps']} iterations × "
        f"{b['apgd_restarts']} restart(s) (APGD-T and FAB-T over all K−1 targets), FAB-T {b['fab_steps']} steps, "
        f"Square {b['square_queries']} queries (AutoAttack uses 5000; `--thorough` does), AutoAttack components "
        f"at L∞ ε {grid(a['ensemble_eps_linf'])} and L2 ε {grid(a['ensemble_eps_l2'])}.",
        f"- Adaptive attack on the reject option: all wrong classes as targets"
        f"{'' if ad['n_targets'] is None else ' (limited to ' + str(ad['n_targets']) + ')'}, {ad['steps']} steps "
        f"× {ad['restarts']} restart(s), cosine step size from 2ε, λ = {ad['lam']}; at L∞ ε "
        f"{grid(a['adaptive_eps_linf'])} and L2 ε {grid(a['adaptive_eps_l2'])}; convergence check at the "
        "headline ε: twice the steps and twice the restarts on the points still unbroken, repeated (at most "
        f"{a.get('adaptive_escalations', 1)} times) while a doubling still moves the figure.",
        f"- OOD: {cfg['n_id']} ID test points, {cfg['n_ood']} per OOD set; Mahalanobis / KNN (k={cfg['knn_k']}) "
        f"fitted on {cfg['n_fit']} training points.",
        f"- L∞ ε grid {a['eps_linf']}; L2 ε grid {a['eps_l2']}.",
        "",
    ]


def _headline_rows(models: dict) -> list[list[str]]:
    rows = []
    for lbl, e in models.items():
        h, adv = e["adversarial"]["headline"], e["adversarial"]
        oods = [v["reliability"]["auroc"] for v in e["ood"].values() if "reliability" in v]
        paper_df = (adv.get("paper_deepfool") or {}).get("mean_r_over_x")
        for opt, by_norm in (h.get("reject") or {"–": {}}).items():
            served = e.get("reject_options", {}).get(opt, {}).get("served", True)
            name = lbl if served else f"{lbl} + {opt} reject (ablation)"
            rows.append(
                [
                    name,
                    pct(e.get("test_acc")),
                    ci(h.get("robust_acc_linf")),
                    ci(by_norm.get("linf")),
                    ci(h.get("robust_acc_l2")),
                    ci(by_norm.get("l2")),
                    num(paper_df, ".4f"),
                    num(h.get("deepfool_score"), ".4f"),
                    num(float(np.mean(oods)) if oods else None),
                    num(e["misclassification"].get("reliability", {}).get("misclassification_auroc")),
                ]
            )
    return rows


def _headline(results: dict) -> list[str]:
    a = results["config"]["adversarial"]
    lines = ["## Headline", ""]
    lines += _table(
        [
            "model",
            "test acc %",
            f"robust L∞ {a['headline_linf']:g} % [95% CI]",
            f"reject option, adaptive, L∞ {a['headline_linf']:g} %",
            f"robust L2 {a['headline_l2']:g} %",
            f"reject option, adaptive, L2 {a['headline_l2']:g} %",
            "DeepFool ‖r‖/‖x‖ (paper's metric)",
            "DeepFool ‖r‖/‖x‖ (box, pixels)",
            "mean OOD AUROC (reliability)",
            "misclf. AUROC (reliability)",
        ],
        _headline_rows(results["models"]),
    )
    return lines + [
        "*Robust*: per-sample worst case over every attack that ran (white-box, AutoAttack components, "
        "black-box, the adaptive attack). *Reject option, adaptive*: a point counts as broken when any attack "
        "found a point inside the ε-ball that is misclassified AND accepted by the score module the ONNX graph "
        "serves (adaptive successes are confirmed by the graph itself); the ablation row gives lin_pen a "
        "Mahalanobis reject option on its own 8-d latent, attacked the same way.",
        "",
    ]


def _paired(results: dict) -> list[str]:
    rows = [
        [
            r["a"],
            r["figure_a"],
            r["b"],
            r["figure_b"],
            str(r["n"]),
            str(r["a_only"]),
            str(r["b_only"]),
            f"{100 * r['diff']:+.0f}" if r["diff"] is not None else "–",
            num(r["p_value"], ".3g"),
        ]
        for r in results.get("paired", [])
    ]
    if not rows:
        return []
    return ["## Paired comparisons (same points, exact McNemar)", ""] + _table(
        ["A", "figure", "B", "figure", "n", "robust only A", "robust only B", "A − B (points)", "p"], rows
    )


def _paper(results: dict) -> list[str]:
    pc = results.get("paper_comparison", {})
    rows = []
    for r in pc.get("rows", []):
        m = r["measured"]
        ms = (
            f"×{m:.2f} (bin_enc {r['bin_enc']:.4g} / no_pen {r['no_pen']:.4g})"
            if isinstance(m, float)
            else ", ".join(f"{k}: {num(v) if isinstance(v, float) else v}" for k, v in m.items())
        )
        rows.append([r["claim"], r["paper"], ms, {True: "**yes**", False: "**no**"}.get(r["agrees"], "–")])
    return (
        [
            "## Paper comparison (Sbailò & Ghiringhelli)",
            "",
            "Method: *Emergence of Latent Binary Encoding in Deep Neural Network Classifiers* (arXiv 2310.08224 "
            "v1). The ×29–×52 DeepFool range is from the authors' successor manuscript on latent point collapse "
            "(*Latent Point Collapse on a Low Dimensional Embedding in Deep Neural Network Classifiers*). Detectors "
            "are compared like with like (Mahalanobis with Mahalanobis, max-softmax with max-softmax).",
            "",
        ]
        + _table(["claim", "paper", "measured here", "agrees"], rows)
        + [pc.get("note", ""), ""]
    )


def _curves(results: dict) -> list[str]:
    lines = []
    models, a = results["models"], results["config"]["adversarial"]
    for norm, title in (("linf", "L∞"), ("l2", "L2")):
        eps = a["eps_linf"] if norm == "linf" else a["eps_l2"]
        rows = []
        for lbl, e in models.items():
            adv = e["adversarial"]
            for name, at in adv["attacks"].items():
                if at.get("norm") == norm and len(at.get("eps", [])) == len(eps) and "robust_acc" in at:
                    rows.append([lbl, f"{name} (n={at['n']})"] + [pct(v) for v in at["robust_acc"]])
            w = adv["worst_case"].get(norm)
            if w:
                rows.append(
                    [lbl, f"**worst case** (n={w['n']}, {len(w['attacks'])} attacks)"]
                    + [f"**{pct(v)}**" for v in w["robust_acc"]]
                )
            for opt, by_norm in adv.get("reject", {}).items():
                if norm in by_norm:
                    rows.append(
                        [lbl, f"**reject option ({opt}), adaptive**"]
                        + [f"**{pct(v)}**" if v is not None else "–" for v in by_norm[norm]["robust_acc"]]
                    )
        lines += [f"## Robust accuracy (%) vs {title} ε", ""] + _table(
            ["model", "attack", *[f"ε={e:g}" for e in eps]], rows
        )
    return lines


def _autoattack_and_adaptive(results: dict) -> list[str]:
    rows, arows = [], []
    for lbl, e in results["models"].items():
        adv = e["adversarial"]
        for name, at in adv["attacks"].items():
            if at.get("residual"):
                rows.append(
                    [
                        lbl,
                        name,
                        ", ".join(
                            f"{k}: {at['attacked_per_eps'][k]} → {v}"
                            for k, v in at["extra_broken_per_eps"].items()
                        ),
                        f"{at['seconds']:.0f}",
                    ]
                )
        for opt, r in adv.get("reject", {}).items():
            for norm in ("linf", "l2"):
                ad = r["adaptive"].get(norm)
                if ad:
                    c = ad["convergence"]
                    arows.append(
                        [
                            lbl,
                            opt,
                            norm,
                            f"{c['eps']:g}",
                            pct(c.get("base")),
                            pct(c.get("strong")),
                            " → ".join(f"{lv['points']}" for lv in c.get("levels", [])) or "0",
                            str(ad["unconfirmed"]),
                            f"{ad['seconds']:.0f}",
                        ]
                    )
    lines = ["## AutoAttack components (on the points the rest left unbroken)", ""]
    lines += _table(["model", "attack", "ε: points attacked → newly broken", "seconds"], rows)
    lines += ["## Adaptive attack on the reject option: convergence", ""]
    lines += [
        "Convergence check: twice the steps and twice the restarts on the points every run so far left unbroken, "
        "repeated while a doubling still breaks more than the tolerance; the columns compare the figure before "
        "and after the last doubling (every run is in the worst case).",
        "",
    ]
    lines += _table(
        [
            "model",
            "reject option",
            "norm",
            "ε",
            "robust % before the last doubling",
            "robust % after it",
            "points attacked per doubling",
            "successes the ONNX graph did not confirm",
            "seconds",
        ],
        arows,
    )
    return lines


def _min_norms(results: dict) -> list[str]:
    rows = []
    for lbl, e in results["models"].items():
        for name, at in e["adversarial"]["attacks"].items():
            if "min_norm" in at:
                mn = at["min_norm"]
                rows.append(
                    [
                        lbl,
                        name,
                        at["norm"],
                        num(mn["median"], ".4f"),
                        pct(mn["found_share"]),
                        f"{at['seconds']:.1f}",
                    ]
                )
        for norm, w in e["adversarial"]["worst_case"].items():
            if "min_norm" in w:
                mn = w["min_norm"]
                rows.append(
                    [
                        lbl,
                        f"**ensemble min** ({', '.join(mn['attacks'])})",
                        norm,
                        f"**{num(mn['median'], '.4f')}**",
                        pct(mn["found_share"]),
                        "–",
                    ]
                )
    return ["## Minimal perturbations (minimum-norm attacks, unclipped, box [0, 1])", ""] + _table(
        ["model", "attack", "norm", "median ‖δ‖", "found %", "seconds"], rows
    )


def _ood(results: dict) -> list[str]:
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
        lines += [f"### {title}", ""] + _table(["model", "method", *sets], rows)
    rows = [
        [lbl, pct(e["calibration"]["accept_rate"])]
        + [pct(e["ood"][s]["accept_rate_at_threshold"]) for s in sets if s in e["ood"]]
        for lbl, e in models.items()
    ]
    return (
        lines
        + ["### Accept rate (%) at the artifact's calibrated threshold", ""]
        + _table(["model", "ID test", *sets], rows)
    )


def _selective_and_geometry(results: dict) -> list[str]:
    models = results["models"]
    rows = [
        [lbl, m, num(v["misclassification_auroc"]), num(v["aurc"], ".4f"), num(v["e_aurc"], ".4f")]
        for lbl, e in models.items()
        for m, v in e["misclassification"].items()
    ]
    lines = ["## Misclassification detection, calibration, selective classification (ID test)", ""]
    lines += _table(["model", "score", "misclf. AUROC", "AURC", "E-AURC"], rows)
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
    lines += _table(
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
    if rows:
        lines += [
            "Risk guarantee (artifacts exported with `--target-risk`): certified on the calibration split, "
            "realized on the ID test points",
            "",
        ]
        lines += _table(
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
    rows = [
        [
            lbl,
            str(g.get("latent_width")),
            str(g.get("bimodal_dims", "–")),
            num(g.get("test_same_encoding")),
            str(g.get("test_distinct_class_codes", "–")),
            num(g.get("test_nc1"), ".4g"),
        ]
        for lbl, e in models.items()
        for g in [e["geometry"]]
    ]
    lines += ["## Latent geometry (from each run's metrics.json)", ""]
    lines += _table(["model", "latent width", "bimodal dims", "same encoding", "distinct codes", "NC1"], rows)
    rows = [
        [
            lbl,
            f"`{artifact_name(e['artifact']['path'])}`",
            e["artifact"]["score"],
            num(e["artifact"]["threshold"], ".4g"),
            num(e["artifact"]["parity_with_torch"]["max_abs_diff_reliability"], ".2g"),
            e["run_status"],
        ]
        for lbl, e in models.items()
    ]
    return (
        lines
        + ["## Artifacts", ""]
        + _table(
            ["model", "artifact", "score", "threshold", "max |Δ reliability| torch vs ONNX", "run"], rows
        )
    )


def _plots(plots: dict) -> list[str]:
    lines = ["## Plots", ""]
    for key, title in (
        ("worst_all", "worst-case robust accuracy, all models"),
        ("risk_coverage", "risk-coverage"),
    ):
        if key in plots.get("_all", {}):
            lines += [f"![{title}]({plots['_all'][key]})", ""]
    for lbl, p in plots.items():
        if lbl != "_all":
            lines += [f"### {lbl}", ""] + [f"![{k}]({v})" for k, v in p.items()] + [""]
    return lines


CONVENTIONS = [
    "## Conventions",
    "",
    "- Scores are oriented higher = more in-distribution / reliable. OOD metrics treat ID as positive; FPR@95 is the "
    "OOD share accepted at the largest threshold that still accepts ≥95% of the ID test points.",
    "- Every gradient attack uses a stable loss: the logit margin, or cross-entropy written as "
    "softplus(logsumexp_{j≠y} l_j − l_y) in float64 (float32 cross-entropy has exactly zero gradient once the "
    "softmax saturates).",
    "- Worst case = per sample, any attack that ran succeeded within ε (the returned input inside the ε-ball and "
    "the box, re-checked); an adversarial found within a smaller ε counts at every larger ε.",
    "- The paper's DeepFool metric: mean of ‖r‖₂/‖x‖₂ in the model's normalised input space, unclipped, label = "
    "prediction, over every sample point; the box variant: pixels in [0, 1], correctly classified points.",
    "- Misclassification AUROC: correct predictions positive. ECE: 15 equal-width bins. AURC: mean selective risk "
    "over all coverages; E-AURC = AURC − AURC of a perfect ranking.",
    "",
]


def render_markdown(results: dict, plots: dict[str, dict[str, str]]) -> str:
    if not results["models"]:  # only --onnx graphs: their black-box section is the whole report
        sections = [_header(results), _unmeasured(results), blackbox_section(results)]
        return "\n".join(line for section in sections for line in section)
    sections = [
        _header(results),
        summary_section(results),
        _unmeasured(results),
        _budgets(results) if results["models"] else [],
        _headline(results),
        reject_options_section(results),
        blackbox_section(results),
        _paired(results),
        _paper(results),
        _curves(results),
        _autoattack_and_adaptive(results),
        _min_norms(results),
        _ood(results),
        _selective_and_geometry(results),
        _plots(plots),
        CONVENTIONS,
        _flags_section(results["models"]),
    ]
    return "\n".join(line for section in sections for line in section)
