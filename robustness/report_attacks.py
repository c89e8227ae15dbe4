"""report.md's sections on adversarial robustness: budgets, headline, paired tests, the paper comparison, robust
accuracy per ε, AutoAttack and the adaptive attack, minimal perturbations and the sanity flags."""

from __future__ import annotations

import numpy as np

from robustness.report_format import ci, num, pct, table


def budgets_section(results: dict) -> list[str]:
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


def headline_section(results: dict) -> list[str]:
    a = results["config"]["adversarial"]
    lines = ["## Headline", ""]
    lines += table(
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


def paired_section(results: dict) -> list[str]:
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
    return ["## Paired comparisons (same points, exact McNemar)", ""] + table(
        ["A", "figure", "B", "figure", "n", "robust only A", "robust only B", "A − B (points)", "p"], rows
    )


def paper_section(results: dict) -> list[str]:
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
        + table(["claim", "paper", "measured here", "agrees"], rows)
        + [pc.get("note", ""), ""]
    )


def curves_section(results: dict) -> list[str]:
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
        lines += [f"## Robust accuracy (%) vs {title} ε", ""] + table(
            ["model", "attack", *[f"ε={e:g}" for e in eps]], rows
        )
    return lines


def _autoattack_rows(models: dict) -> list[list[str]]:
    rows = []
    for lbl, e in models.items():
        for name, at in e["adversarial"]["attacks"].items():
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
    return rows


def _adaptive_rows(models: dict) -> list[list[str]]:
    rows = []
    for lbl, e in models.items():
        for opt, r in e["adversarial"].get("reject", {}).items():
            for norm in ("linf", "l2"):
                ad = r["adaptive"].get(norm)
                if ad:
                    c = ad["convergence"]
                    rows.append(
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
    return rows


def autoattack_and_adaptive_section(results: dict) -> list[str]:
    rows, arows = _autoattack_rows(results["models"]), _adaptive_rows(results["models"])
    lines = ["## AutoAttack components (on the points the rest left unbroken)", ""]
    lines += table(["model", "attack", "ε: points attacked → newly broken", "seconds"], rows)
    lines += ["## Adaptive attack on the reject option: convergence", ""]
    lines += [
        "Convergence check: twice the steps and twice the restarts on the points every run so far left unbroken, "
        "repeated while a doubling still breaks more than the tolerance; the columns compare the figure before "
        "and after the last doubling (every run is in the worst case).",
        "",
    ]
    lines += table(
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


def min_norms_section(results: dict) -> list[str]:
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
    return ["## Minimal perturbations (minimum-norm attacks, unclipped, box [0, 1])", ""] + table(
        ["model", "attack", "norm", "median ‖δ‖", "found %", "seconds"], rows
    )


def flags_section(models: dict) -> list[str]:
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
    lines += table(["model", *names], rows)
    lines += ["Details:", ""]
    for lbl, e in models.items():
        for f in e["adversarial"]["flags"]:
            lines.append(f"- {lbl} / {f['name']} ({f['status']}): {f['message']}")
    return lines + [""]
