"""Write a bench run's report: results.json (:mod:`robustness.results`), the PNG plots
(:mod:`robustness.report_plots`), report.md (:mod:`robustness.report_markdown`) and the self-contained report.html
(:mod:`robustness.report_html`)."""

from __future__ import annotations

from pathlib import Path

from robustness.report_html import write_html
from robustness.report_markdown import render_markdown
from robustness.report_plots import (
    plot_latent_hist,
    plot_reliability_hist,
    plot_risk_coverage,
    plot_robust_accuracy,
    plot_roc,
    plot_worst_all,
)
from robustness.results import write_results
from training.jsonio import clean_json


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
            plot_roc(
                lbl, {s: {m: v for m, v in d.items() if isinstance(v, dict)} for s, d in e["ood"].items()}, p
            )
            plots[lbl]["ROC"] = p.name
        if a.get("reliability_id") is not None and a.get("reliability_ood"):
            p = out / f"reliability_hist_{lbl}.png"
            plot_reliability_hist(
                lbl, a["reliability_id"], a["reliability_ood"], e["calibration"]["threshold"], p
            )
            plots[lbl]["reliability histograms"] = p.name
        if a.get("z_id") is not None:
            p = out / f"latent_hist_{lbl}.png"
            plot_latent_hist(lbl, a["z_id"], a.get("y_id"), e["geometry"], p)
            plots[lbl]["latent histograms"] = p.name
        written.update({f"{lbl}:{k}": out / v for k, v in plots[lbl].items()})
    results_path = write_results(results, out)
    md = out / "report.md"
    md.write_text(render_markdown(clean_json(results), plots))
    written["results"] = results_path
    written["report"] = md
    written["html"] = write_html(md)
    return written
