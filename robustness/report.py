"""results.json (versioned schema), report.md and PNG plots (matplotlib, Agg backend) of a bench run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SCHEMA = {"name": "binenc.robustness.results", "version": 1}
DPI = 72
HEADLINE_METHOD = "reliability"


# --------------------------------------------------------------------------- results.json
def _clean(obj):
    """JSON-safe: NaN/Inf -> None (and a marker for +inf min-norms), numpy -> python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else None
    return obj


def write_results(results: dict, out: Path) -> Path:
    path = Path(out) / "results.json"
    path.write_text(json.dumps(_clean(results), indent=1, sort_keys=False, allow_nan=False) + "\n")
    return path


def load_results(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    schema = data.get("schema", {})
    if schema.get("name") != SCHEMA["name"] or schema.get("version") != SCHEMA["version"]:
        raise ValueError(f"{path}: expected schema {SCHEMA}, got {schema}")
    return data


# --------------------------------------------------------------------------- formatting
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


# --------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_robust_accuracy(label: str, adv: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, norm in zip(axes, ("linf", "l2"), strict=True):
        eps = adv["eps"][norm]
        for name, a in adv["attacks"].items():
            if a["norm"] != norm:
                continue
            ax.plot(eps, [np.nan if v is None else v for v in a["robust_acc"]], lw=1, alpha=0.7,
                    ls="--" if a["access"] == "black" else "-", label=name)
        w = adv["worst_case"].get(norm)
        if w:
            ax.plot(eps, [np.nan if v is None else v for v in w["robust_acc"]], "k-", lw=2.5, label="worst case")
            if "robust_acc_reject_naive" in w:
                ax.plot(eps, [np.nan if v is None else v for v in w["robust_acc_reject_naive"]], "k:", lw=2,
                        label="worst, reject (naive)")
        if norm == "linf" and adv.get("adaptive"):
            ax.plot(eps, [np.nan if v is None else v for v in adv["adaptive"]["robust_acc_reject_naive_or_adaptive"]],
                    color="tab:red", ls="-.", lw=2, label="reject, adaptive")
        ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{label}: robust accuracy vs ε", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_worst_all(models: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, norm in zip(axes, ("linf", "l2"), strict=True):
        for label, e in models.items():
            w = e["adversarial"]["worst_case"].get(norm)
            if w:
                ax.plot(w["eps"], [np.nan if v is None else v for v in w["robust_acc"]], marker="o", ms=3, label=label)
        ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
        ax.set_ylabel("worst-case robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_risk_coverage(models: dict, path: Path) -> None:
    plt = _plt()
    labels = list(models)
    fig, flat = _panels(len(labels), 3, 2.6)
    for ax, lbl in zip(flat, labels, strict=False):
        for method, v in models[lbl]["misclassification"].items():
            rc = v["risk_coverage"]
            ax.plot(rc["coverage"], rc["risk"], lw=1.8 if method == HEADLINE_METHOD else 1,
                    label=f"{method} {v['aurc']:.4f}")
        ax.set_title(lbl, fontsize=9)
        ax.set_xlabel("coverage", fontsize=7)
        ax.set_ylabel("selective risk", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5)
    fig.suptitle("risk-coverage on ID test (legend: AURC)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return math.ceil(max(n, 1) / cols), cols


def _panels(n: int, width: float, height: float):
    """A grid of ``n`` subplots (at most 4 per row), unused cells hidden; returns ``(fig, axes.flat)``."""
    plt = _plt()
    r, c = _grid(n)
    fig, axes = plt.subplots(r, c, figsize=(width * c, height * r), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def plot_roc(label: str, ood: dict, path: Path) -> None:
    plt = _plt()
    sets = list(ood)
    fig, flat = _panels(len(sets), 3, 2.8)
    for ax, s in zip(flat, sets, strict=False):
        for method, v in ood[s].items():
            if not isinstance(v, dict) or "roc" not in v:
                continue
            ax.plot(v["roc"]["fpr"], v["roc"]["tpr"], lw=1.8 if method == HEADLINE_METHOD else 1,
                    label=f"{method} {v['auroc']:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(f"ID vs {s}", fontsize=9)
        ax.set_xlabel("FPR (OOD accepted)", fontsize=7)
        ax.set_ylabel("TPR (ID accepted)", fontsize=7)
        ax.legend(fontsize=5, loc="lower right")
    fig.suptitle(f"{label}: OOD ROC curves (legend: AUROC)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_reliability_hist(label: str, rel_id: np.ndarray, rel_ood: dict, threshold: float, path: Path) -> None:
    plt = _plt()
    sets = [s for s, v in rel_ood.items() if v is not None]
    fig, flat = _panels(len(sets), 3, 2.4)
    bins = np.linspace(0, 1, 41)
    for ax, s in zip(flat, sets, strict=False):
        ax.hist(np.clip(rel_id, 0, 1), bins=bins, density=True, alpha=0.5, label="ID test")
        ax.hist(np.clip(rel_ood[s], 0, 1), bins=bins, density=True, alpha=0.5, label=s)
        ax.axvline(threshold, color="k", lw=1, ls="--")
        ax.set_title(f"reliability: ID vs {s}", fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.suptitle(f"{label}: reliability histograms (dashed: threshold {threshold:.3g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_latent_hist(label: str, z: np.ndarray, y: np.ndarray, geometry: dict, path: Path, max_dims: int = 8) -> None:
    plt = _plt()
    d = z.shape[1]
    dims = list(range(min(d, max_dims)))
    fig, flat = _panels(len(dims), 2.6, 2.2)
    sep = geometry.get("dimension_separation") or []
    for ax, j in zip(flat, dims, strict=False):
        ax.hist(z[:, j], bins=60, color="tab:blue", alpha=0.8)
        title = f"z[{j}]"
        if j < len(sep) and sep[j] is not None:
            title += f" sep {sep[j]:.1f}"
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    extra = "" if d <= max_dims else f" (first {max_dims} of {d} feature dims)"
    fig.suptitle(f"{label}: latent histograms on ID test{extra}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# --------------------------------------------------------------------------- report.md
def _flags_section(models: dict) -> list[str]:
    names: list[str] = []
    for e in models.values():
        for f in e["adversarial"]["flags"]:
            if f["name"] not in names:
                names.append(f["name"])
    failed = [(lbl, f) for lbl, e in models.items() for f in e["adversarial"]["flags"] if f["ok"] is False]
    lines = ["## Sanity flags", ""]
    if failed:
        lines += ["> **WARNING: SANITY FLAGS FAILED — the robustness numbers below are suspect for these models.**", ">"]
        lines += [f"> - **{lbl} / {f['name']}**: {f['message']}" for lbl, f in failed]
        lines.append("")
    else:
        lines += ["All sanity flags pass.", ""]
    rows = []
    for lbl, e in models.items():
        st = {f["name"]: f for f in e["adversarial"]["flags"]}
        rows.append([lbl] + [("**FAIL**" if st[n]["ok"] is False else st[n]["status"]) if n in st else "–"
                             for n in names])
    lines += _table(["model", *names], rows)
    lines += ["Details:", ""]
    for lbl, e in models.items():
        for f in e["adversarial"]["flags"]:
            lines.append(f"- {lbl} / {f['name']} ({f['status']}): {f['message']}")
    return lines + [""]


def render_markdown(results: dict, plots: dict[str, dict[str, str]]) -> str:
    cfg = results["config"]
    adv_cfg = cfg["adversarial"]
    models = results["models"]
    env = results["environment"]
    L: list[str] = []
    L += ["# Robustness bench report", ""]
    L += [f"Command: `{cfg['command']}`", "",
          f"Created {results['created_at']}; schema {results['schema']['name']} v{results['schema']['version']}; "
          f"total wall time **{results['seconds_total']:.0f} s** on {env.get('cpu_count')} CPU cores "
          f"({env.get('torch_threads')} torch threads, device {cfg['device']}); load average at start "
          f"{env.get('loadavg_start')}, at end {env.get('loadavg_end')} (the machine may be shared).", ""]
    any_model = next(iter(models.values()), None)
    if any_model:
        n = any_model["adversarial"]["n"]
        b = adv_cfg["budget"]
        L += ["### Sample counts and budgets", "",
              f"- dataset **{cfg['dataset']}**, backbone {cfg['backbone']}, profile {cfg['profile']}, seeds "
              f"{cfg['seeds']}, bench seed {cfg['seed']}; the same test points for every model.",
              f"- cheap attacks (FGSM, PGD) and the PGD convergence probe: **{n['cheap']}** test points; expensive "
              f"(DeepFool, C&W, FMN), adaptive, large-ε probe and ART APGD: **{n['expensive']}** (a prefix of the "
              f"former); black-box HopSkipJump: "
              f"**{n['blackbox']}**. Attacks run on the correctly classified ones; robust accuracy counts clean "
              "errors as failures.",
              f"- PGD {b['pgd_steps']} steps × {b['pgd_restarts']} restart(s) (step 2.5ε/steps, random start); "
              f"DeepFool ≤{b['deepfool_steps']} steps, {b['deepfool_candidates']} candidates; C&W "
              f"{b['cw_binary_steps']}×{b['cw_steps']} steps (const {b['cw_initial_const']}, lr {b['cw_stepsize']}); "
              f"FMN {b['fmn_steps']} steps; HopSkipJump {b['hsj_steps']} iterations, {b['hsj_initial_evals']}–"
              f"{b['hsj_max_evals']} gradient-estimation queries; adaptive {adv_cfg['adaptive_steps']} steps × "
              f"{adv_cfg['adaptive_targets']} targets (λ={adv_cfg['adaptive_lambda']}); ART APGD "
              f"{adv_cfg['apgd_steps']} iterations ({', '.join(adv_cfg['apgd_losses'])}).",
              f"- OOD: {cfg['n_id']} ID test points, {cfg['n_ood']} per OOD set; Mahalanobis / KNN (k={cfg['knn_k']}) "
              f"fitted on {cfg['n_fit']} training points.",
              f"- L∞ ε grid {adv_cfg['eps_linf']}; L2 ε grid {adv_cfg['eps_l2']}.", ""]
    L += _flags_section(models)

    # headline
    L += ["## Headline", ""]
    h_linf = adv_cfg["headline_linf"]
    h_l2 = adv_cfg["headline_l2"]
    rows = []
    for lbl, e in models.items():
        h = e["adversarial"]["headline"]
        oods = [v["reliability"]["auroc"] for v in e["ood"].values() if "reliability" in v]
        rows.append([lbl, pct(e.get("test_acc")), pct(e["adversarial"]["clean_acc"]["expensive"]),
                     pct(h.get("robust_acc_linf")), pct(h.get("robust_acc_linf_reject_naive")),
                     pct(h.get("robust_acc_linf_reject_adaptive")), pct(h.get("robust_acc_l2")),
                     num(h.get("deepfool_score"), ".4f"), num(h.get("median_min_l2"), ".3f"),
                     num(h.get("median_min_linf"), ".4f"), num(float(np.mean(oods)) if oods else None),
                     num(e["misclassification"].get("reliability", {}).get("misclassification_auroc"))])
    L += _table(["model", "test acc %", "clean acc % (sample)", f"robust L∞ {h_linf} %",
                 "…reject, naive %", "…reject, adaptive %", f"robust L2 {h_l2} %", "DeepFool ‖r‖/‖x‖",
                 "median min L2", "median min L∞",
                 "mean OOD AUROC (reliability)", "misclf. AUROC (reliability)"], rows)
    L += ["Robust accuracy is the per-sample worst case over the whole ensemble (white-box + black-box) on the "
          "expensive-tier points. *Reject*: an adversarial that the artifact's calibrated threshold rejects counts "
          "as not fooled; *adaptive* adds the reliability-aware attack.", ""]

    # paper comparison
    L += ["## Paper comparison (Sbailò & Ghiringhelli, arXiv 2310.08224)", ""]
    rows = []
    for r in results.get("paper_comparison", {}).get("rows", []):
        m = r["measured"]
        if isinstance(m, float):
            ms = f"×{m:.2f} (bin_enc {r['bin_enc']:.4g} / no_pen {r['no_pen']:.4g}"
            if r.get("per_seed"):
                ms += "; per seed " + ", ".join(f"s{k}: ×{v:.2f}" for k, v in r["per_seed"].items())
            ms += ")"
        else:
            ms = ", ".join(f"{k}: {num(v) if isinstance(v, float) else v}" for k, v in m.items())
        rows.append([r["claim"], r["paper"], ms, "**yes**" if r["agrees"] else "**no**"])
    L += _table(["claim", "paper", "measured here", "agrees"], rows)

    # adversarial tables
    for norm, title in (("linf", "L∞"), ("l2", "L2")):
        eps = adv_cfg["eps_linf"] if norm == "linf" else adv_cfg["eps_l2"]
        L += [f"## Robust accuracy (%) vs {title} ε: models × attacks", ""]
        rows = []
        for lbl, e in models.items():
            adv = e["adversarial"]
            for name, a in adv["attacks"].items():
                if a["norm"] == norm:
                    rows.append([lbl, f"{name} (n={a['n']})"] + [pct(v) for v in a["robust_acc"]])
            w = adv["worst_case"].get(norm)
            if w:
                rows.append([lbl, f"**worst case** (n={w['n']})"] + [f"**{pct(v)}**" for v in w["robust_acc"]])
                if "cheap" in w:
                    rows.append([lbl, f"worst, cheap attacks (n={w['cheap']['n']})"] +
                                [pct(v) for v in w["cheap"]["robust_acc"]])
                if "robust_acc_reject_naive" in w:
                    rows.append([lbl, "worst, reject option (naive)"] + [pct(v) for v in w["robust_acc_reject_naive"]])
            if norm == "linf" and adv.get("adaptive"):
                rows.append([lbl, "reject option, naive + adaptive"] +
                            [pct(v) for v in adv["adaptive"]["robust_acc_reject_naive_or_adaptive"]])
        L += _table(["model", "attack", *[f"ε={e:g}" for e in eps]], rows)

    # minimal perturbations
    L += ["## Minimal perturbations (minimum-norm attacks, unclipped)", ""]
    rows = []
    for lbl, e in models.items():
        for name, a in e["adversarial"]["attacks"].items():
            if "min_norm" in a:
                mn = a["min_norm"]
                rows.append([lbl, name, a["norm"], num(mn["median"], ".4f"), num(mn["mean_found"], ".4f"),
                             pct(mn["found_share"]), f"{a['seconds']:.1f}"])
        for norm, w in e["adversarial"]["worst_case"].items():
            if "min_norm" in w:
                mn = w["min_norm"]
                rows.append([lbl, f"**ensemble min** ({', '.join(mn['attacks'])})", norm, f"**{num(mn['median'], '.4f')}**",
                             num(mn["mean_found"], ".4f"), pct(mn["found_share"]), "–"])
    L += _table(["model", "attack", "norm", "median ‖δ‖", "mean ‖δ‖ (found)", "found %", "seconds"], rows)

    # reject option
    L += ["## Reject option: share of successful naive adversarials the threshold rejects (%)", ""]
    rows = []
    for lbl, e in models.items():
        adv = e["adversarial"]
        for norm in ("linf", "l2"):
            w = adv["worst_case"].get(norm)
            if not w or "rejected_share_of_fooled_points" not in w:
                continue
            rows.append([lbl, f"worst case {norm}", " / ".join(f"{e_:g}: {pct(v)}" for e_, v in
                                                               zip(w["eps"], w["rejected_share_of_fooled_points"],
                                                                   strict=True) if e_ > 0)])
        for name, a in adv["attacks"].items():
            if "rejected_share_of_successes" in a:
                rows.append([lbl, name, " / ".join(f"{e_:g}: {pct(v)}" for e_, v in
                                                   zip(a["eps"], a["rejected_share_of_successes"], strict=True)
                                                   if e_ > 0)])
    L += _table(["model", "attack", "rejected share per ε"], rows)
    L += ["Adaptive attack: " + (next((e["adversarial"]["adaptive"]["objective"] for e in models.values()
                                       if e["adversarial"].get("adaptive")), "not run")) + ".", ""]

    # APGD cross-check
    L += ["## Cross-check with ART AutoPGD", ""]
    rows = []
    for lbl, e in models.items():
        c = e["adversarial"]["checks"].get("apgd")
        if not c:
            continue
        for k in c["robust_acc_apgd"]:
            rows.append([lbl, k, str(c["n"]), pct(c["robust_acc_ours"][k]), pct(c["robust_acc_apgd"][k]),
                         pct(c["robust_acc_union"][k])])
    L += _table(["model", "L∞ ε", "n", "ours (worst case) %", "ART APGD %", "union %"], rows)

    # OOD
    sets = list(results.get("ood_sets", {}))
    L += ["## OOD detection: models × OOD sets × methods", ""]
    L += ["OOD sets: " + "; ".join(f"**{s}** ({v['source']}, n={v['n']})" for s, v in results["ood_sets"].items())
          + ("" if not results.get("skipped_ood_sets") else
             "; skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped_ood_sets"].items())), ""]
    L += ["`reliability` is the artifact's served score (bin_enc: vertex distance; baselines: max-softmax computed in "
          "float32 by the ONNX graph, which saturates at exactly 1.0 for confident inputs, so many ties); "
          "`max_softmax` is the same quantity recomputed in float64 from the logits.", ""]
    for metric, title in (("auroc", "AUROC"), ("fpr95", "FPR at 95% ID acceptance (lower is better)"),
                          ("aupr_in", "AUPR-in (ID positive)"), ("aupr_out", "AUPR-out (OOD positive)")):
        L += [f"### {title}", ""]
        rows = []
        for lbl, e in models.items():
            methods = [m for m in next(iter(e["ood"].values()), {}) if m != "accept_rate_at_threshold"]
            for m in methods:
                rows.append([lbl, m] + [num(e["ood"][s][m][metric]) for s in sets if s in e["ood"]])
        L += _table(["model", "method", *sets], rows)
    L += ["### Accept rate (%) at the artifact's calibrated threshold", ""]
    rows = [[lbl, pct(e["calibration"]["accept_rate"])] + [pct(e["ood"][s]["accept_rate_at_threshold"])
                                                           for s in sets if s in e["ood"]]
            for lbl, e in models.items()]
    L += _table(["model", "ID test", *sets], rows)

    # misclassification / calibration
    L += ["## Misclassification detection, calibration, selective classification (ID test)", ""]
    rows = []
    for lbl, e in models.items():
        for m, v in e["misclassification"].items():
            rows.append([lbl, m, num(v["misclassification_auroc"]), num(v["aurc"], ".4f"), num(v["e_aurc"], ".4f")])
    L += _table(["model", "score", "misclf. AUROC", "AURC", "E-AURC"], rows)
    rows = [[lbl, pct(c["acc"]), num(c["ece_max_softmax"], ".4f"), num(c["ece_reliability"], ".4f"),
             num(c["threshold"], ".4g"), pct(c["accept_rate"]), pct(c["acc_accepted"]), pct(c["acc_rejected"])]
            for lbl, e in models.items() for c in [e["calibration"]]]
    L += _table(["model", "acc %", "ECE (max-softmax)", "ECE (reliability)", "threshold", "accept %",
                 "acc accepted %", "acc rejected %"], rows)

    # geometry
    L += ["## Latent geometry (from each run's metrics.json)", ""]
    rows = []
    for lbl, e in models.items():
        g = e["geometry"]
        rows.append([lbl, str(g.get("latent_width")), str(g.get("bimodal_dims", "–")),
                     num(g.get("test_same_encoding")), str(g.get("test_distinct_class_codes", "–")),
                     num(g.get("test_nc1"), ".4g"), num(g.get("test_sigma_w_rel"), ".4g")])
    L += _table(["model", "latent width", "bimodal dims", "same encoding", "distinct codes", "NC1",
                 "Tr Σ_W / Tr Σ_B"], rows)
    L += ["## Artifacts", ""]
    rows = [[lbl, f"`{e['artifact']['path']}`", e["artifact"]["score"], num(e["artifact"]["threshold"], ".4g"),
             num(e["artifact"]["parity_with_torch"]["max_abs_diff_reliability"], ".2g"), e["run_status"]]
            for lbl, e in models.items()]
    L += _table(["model", "artifact", "score", "threshold", "max |Δ reliability| torch vs ONNX", "run"], rows)

    # plots
    L += ["## Plots", ""]
    for key, title in (("worst_all", "worst-case robust accuracy, all models"), ("risk_coverage", "risk-coverage")):
        if key in plots.get("_all", {}):
            L += [f"![{title}]({plots['_all'][key]})", ""]
    for lbl, p in plots.items():
        if lbl == "_all":
            continue
        L += [f"### {lbl}", ""] + [f"![{k}]({v})" for k, v in p.items()] + [""]

    L += ["## Conventions", "",
          "- Scores are oriented higher = more in-distribution / reliable. OOD metrics treat ID as positive; "
          "FPR@95 is the OOD share accepted at the largest threshold that still accepts ≥95% of the ID test points; "
          "AUPR-out negates the score and treats OOD as positive.",
          "- Misclassification AUROC: correct predictions positive. ECE: 15 equal-width bins. AURC: mean selective "
          "risk over all coverages (ties spread evenly); E-AURC = AURC − AURC of a perfect ranking.",
          "- Worst case = per sample, any attack of the ensemble succeeded within ε (Foolbox: perturbation clipped "
          "to ε, clipped input re-checked). Fixed-ε attacks are rerun at every ε.",
          "- DeepFool score (the paper's metric): mean over correctly classified points of ‖r‖₂/‖x‖₂ with r the "
          "unclipped L2 DeepFool perturbation (overshoot 0.02, inputs kept in [0, 1]).",
          "- Detectors use z, the classifier layer's input (8-d latent for bin_enc/lin_pen/nonlin_pen, 256-d "
          "feature for no_pen); the reliability is the artifact's served score (torch re-implementation checked "
          "against ONNX Runtime, see Artifacts).", ""]
    return "\n".join(L)


def write_report(results: dict, arrays: dict, out: str | Path) -> dict[str, Path]:
    """Write results.json, the PNG plots and report.md into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, dict[str, str]] = {"_all": {}}
    written: dict[str, Path] = {}
    if results["models"]:
        p = out / "robust_acc_worst_case.png"
        plot_worst_all(results["models"], p)
        plots["_all"]["worst_all"] = p.name
        written["worst_all"] = p
        p = out / "risk_coverage.png"
        plot_risk_coverage(results["models"], p)
        plots["_all"]["risk_coverage"] = p.name
        written["risk_coverage"] = p
    for lbl, e in results["models"].items():
        a = arrays.get(lbl, {})
        plots[lbl] = {}
        p = out / f"robust_acc_{lbl}.png"
        plot_robust_accuracy(lbl, e["adversarial"], p)
        plots[lbl]["robust accuracy"] = p.name
        if e["ood"]:
            p = out / f"roc_{lbl}.png"
            plot_roc(lbl, {s: {m: v for m, v in d.items() if isinstance(v, dict)} for s, d in e["ood"].items()}, p)
            plots[lbl]["ROC"] = p.name
        if a.get("reliability_id") is not None and a.get("reliability_ood"):
            p = out / f"reliability_hist_{lbl}.png"
            plot_reliability_hist(lbl, a["reliability_id"], a["reliability_ood"], e["calibration"]["threshold"], p)
            plots[lbl]["reliability histograms"] = p.name
        if a.get("z_id") is not None:
            p = out / f"latent_hist_{lbl}.png"
            plot_latent_hist(lbl, a["z_id"], a.get("y_id"), e["geometry"], p)
            plots[lbl]["latent histograms"] = p.name
        written.update({f"{lbl}:{k}": out / v for k, v in plots[lbl].items()})
    results_path = write_results(results, out)
    md = out / "report.md"
    md.write_text(render_markdown(_clean(results), plots))
    written["results"] = results_path
    written["report"] = md
    return written
