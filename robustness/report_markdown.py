"""report.md of a bench run: the summary on top (:mod:`robustness.summary`), then one section per figure family
(adversarial robustness: :mod:`robustness.report_attacks`; OOD, selective classification, geometry:
:mod:`robustness.report_reliability`; ``--onnx`` graphs: :mod:`robustness.onnx_report`)."""

from __future__ import annotations

from robustness.ccat import reject_options_section
from robustness.onnx_report import blackbox_section
from robustness.report_attacks import (
    autoattack_and_adaptive_section,
    budgets_section,
    curves_section,
    flags_section,
    headline_section,
    min_norms_section,
    paired_section,
    paper_section,
)
from robustness.report_format import table
from robustness.report_reliability import artifacts_section, geometry_section, ood_section, selective_section
from robustness.summary import summary_section


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
    ] + table(
        ["model", "run", "reason"], [[lbl, f"`{e['run_dir']}`", e["reason"]] for lbl, e in gone.items()]
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
        budgets_section(results) if results["models"] else [],
        headline_section(results),
        reject_options_section(results),
        blackbox_section(results),
        paired_section(results),
        paper_section(results),
        curves_section(results),
        autoattack_and_adaptive_section(results),
        min_norms_section(results),
        ood_section(results),
        selective_section(results),
        geometry_section(results),
        artifacts_section(results),
        _plots(plots),
        CONVENTIONS,
        flags_section(results["models"]),
    ]
    return "\n".join(line for section in sections for line in section)
