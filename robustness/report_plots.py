"""The bench's PNG plots (matplotlib, Agg backend): robust accuracy vs ε, risk-coverage, ROC, reliability and
latent histograms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DPI = 100
LEGEND = {"fontsize": 7, "framealpha": 0.9}
HEADLINE_METHOD = "reliability"


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (the bench's and the scripts' plots)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _nan(values) -> list[float]:
    return [np.nan if v is None else v for v in values]


def plot_robust_accuracy(label: str, adv: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, norm in zip(axes, ("linf", "l2"), strict=True):
        for name, a in adv["attacks"].items():
            if a.get("norm") == norm and "robust_acc" in a and len(a["eps"]) == len(a["robust_acc"]) > 1:
                ax.plot(
                    a["eps"],
                    _nan(a["robust_acc"]),
                    lw=1,
                    alpha=0.7,
                    ls="--" if a.get("access") == "black" else "-",
                    label=name,
                )
        w = adv["worst_case"].get(norm)
        if w:
            ax.plot(w["eps"], _nan(w["robust_acc"]), "k-", lw=2.5, label="worst case")
        for opt, by_norm in adv.get("reject", {}).items():
            r = by_norm.get(norm)
            if r:
                ax.plot(
                    r["eps"],
                    _nan(r["robust_acc"]),
                    ls="-.",
                    marker="o",
                    lw=2,
                    label=f"reject ({opt}), adaptive",
                )
        ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", **LEGEND)
    fig.suptitle(f"{label}: robust accuracy vs ε", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_worst_all(models: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, norm in zip(axes, ("linf", "l2"), strict=True):
        for label, e in models.items():
            w = e["adversarial"]["worst_case"].get(norm)
            if w:
                ax.plot(
                    w["eps"],
                    [np.nan if v is None else v for v in w["robust_acc"]],
                    marker="o",
                    ms=3,
                    label=label,
                )
        ax.set_xlabel("ε (L∞)" if norm == "linf" else "ε (L2)")
        ax.set_ylabel("worst-case robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**LEGEND)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_risk_coverage(models: dict, path: Path) -> None:
    plt = pyplot()
    labels = list(models)
    fig, flat = _panels(len(labels), 3, 2.6)
    for ax, lbl in zip(flat, labels, strict=False):
        for method, v in models[lbl]["misclassification"].items():
            rc = v["risk_coverage"]
            ax.plot(
                rc["coverage"],
                rc["risk"],
                lw=1.8 if method == HEADLINE_METHOD else 1,
                label=f"{method} {v['aurc']:.4f}",
            )
        ax.set_title(lbl, fontsize=9)
        ax.set_xlabel("coverage", fontsize=7)
        ax.set_ylabel("selective risk", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(**LEGEND)
    fig.suptitle("risk-coverage on ID test (legend: AURC)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return math.ceil(max(n, 1) / cols), cols


def _panels(n: int, width: float, height: float):
    """A grid of ``n`` subplots (at most 4 per row), unused cells hidden; returns ``(fig, axes.flat)``."""
    plt = pyplot()
    r, c = _grid(n)
    fig, axes = plt.subplots(r, c, figsize=(width * c, height * r), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def plot_roc(label: str, ood: dict, path: Path) -> None:
    plt = pyplot()
    sets = list(ood)
    fig, flat = _panels(len(sets), 3, 2.8)
    for ax, s in zip(flat, sets, strict=False):
        for method, v in ood[s].items():
            if not isinstance(v, dict) or "roc" not in v:
                continue
            ax.plot(
                v["roc"]["fpr"],
                v["roc"]["tpr"],
                lw=1.8 if method == HEADLINE_METHOD else 1,
                label=f"{method} {v['auroc']:.3f}",
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(f"ID vs {s}", fontsize=9)
        ax.set_xlabel("FPR (OOD accepted)", fontsize=7)
        ax.set_ylabel("TPR (ID accepted)", fontsize=7)
        ax.legend(loc="lower right", **LEGEND)
    fig.suptitle(f"{label}: OOD ROC curves (legend: AUROC)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_reliability_hist(
    label: str, rel_id: np.ndarray, rel_ood: dict, threshold: float, path: Path
) -> None:
    fig = reliability_hist_figure(label, rel_id, rel_ood, threshold)
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)


def reliability_hist_figure(label: str, rel_id: np.ndarray, rel_ood: dict, threshold: float):
    """ID vs each OOD set on a log reliability axis (a calibrated threshold such as 0.011 would sit inside the first
    bin of a linear one), the threshold drawn and the rejected side shaded."""
    sets = [s for s, v in rel_ood.items() if v is not None]
    fig, flat = _panels(len(sets), 3.2, 2.6)
    values = np.concatenate(
        [
            np.asarray(rel_id, dtype=float).ravel(),
            *(np.asarray(rel_ood[s], dtype=float).ravel() for s in sets),
        ]
    )
    positive = values[values > 0]
    lo = max(min(float(np.percentile(positive, 1)) if positive.size else 1e-6, threshold / 10, 0.5), 1e-8)
    bins = np.logspace(np.log10(lo), 0, 41)
    for ax, s in zip(flat, sets, strict=False):
        ax.axvspan(lo, threshold, color="0.88", zorder=0, label="rejected (below the threshold)")
        ax.hist(
            np.clip(rel_id, lo, 1), bins=bins, density=True, alpha=0.55, color="tab:blue", label="ID test"
        )
        ax.hist(
            np.clip(rel_ood[s], lo, 1),
            bins=bins,
            density=True,
            alpha=0.55,
            color="tab:orange",
            label="OOD set named above the panel",
        )
        ax.axvline(threshold, color="k", lw=1.2, ls="--", label=f"threshold {threshold:.3g}")
        ax.set_xscale("log")
        ax.set_xlim(lo, 1)
        ax.set_title(f"ID test vs {s}", fontsize=9)
        ax.set_xlabel("reliability (log scale)", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    if sets:
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), **LEGEND)
    fig.suptitle(f"{label}: reliability histograms, ID test vs each OOD set", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 / max(1, len(flat) // 4), 1, 1))
    return fig


def plot_latent_hist(
    label: str, z: np.ndarray, y: np.ndarray, geometry: dict, path: Path, max_dims: int = 8
) -> None:
    plt = pyplot()
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
