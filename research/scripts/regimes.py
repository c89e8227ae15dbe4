"""The regime sweep behind research/ (research/per-run.md): one small JSON per run, and the tables.

    python -m research.scripts.regimes summarize runs/RUN [--bench BENCH_OUT] [--ood OOD_JSON] --out research/regimes/NAME.json
    python -m research.scripts.regimes table research/regimes/*.json

``summarize`` keeps, from a finished run and optionally from a bench over it (``python -m robustness.bench
--evaluate RUN --out BENCH_OUT``) and from ``scripts/ood_eval.py RUN --json OOD_JSON``: the regime (profile, gamma
cap, epochs, seed), training time, test accuracy, same-encoding (all / correctly classified / accepted inputs), NC1
and the within-class spread, the bench's robust accuracy, adaptive reject-option figures at L∞ 0.02 / 0.05, the
paper's DeepFool metric, OOD and misclassification AUROCs, and ood_eval's MNIST figures with their intervals.
``table`` prints the per-run table, for (variant, regime) groups with several seeds the mean ± std, and the served
score's validation figures per regime (the only ones a choice of regime or rule may use).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from robustness.results import load_results
from robustness.selection import SERVED
from training.jsonio import write_json_atomic
from training.rundir import CONFIG, HISTORY, METRICS, read_history


def _bench_entry(bench: Path, run: Path) -> dict | None:
    res = load_results(bench / "results.json")
    for entry in res["models"].values():
        if Path(entry["run_dir"]).name == run.name:
            return entry
    return None


def _curve_at(reject: dict, eps: float) -> dict | None:
    if eps not in reject["eps"]:
        return None
    i = reject["eps"].index(eps)
    return {"value": reject["robust_acc"][i], "ci95": reject["ci95"][i], "n": reject["n"]}


def regime_name(train: dict) -> str:
    per = "/step" if train["gamma_per"] == "step" else "/epoch"
    pen = f"cap {train['gamma_cap']:g}{per}" if train["variant"] == "bin_enc" else "no penalty"
    adv = f", {train['adv_train']} AT ε {train['adv_eps']:g}" if train.get("adv_train") else ""
    if train.get("adv_train") == "pgd":
        adv += f" ({train['adv_steps']} steps)"
    if train.get("adv_train") and train.get("adv_select") == "robust":
        adv += ", robust-val epoch"
    shift = f", shift {train['augment_shift']}" if train.get("augment_shift") else ""
    width = "" if train["variant"] == "no_pen" else f", d {train['latent_dim']}"
    return f"{train['epochs']} ep, {pen}{width}{adv}{shift}"


def summarize(run: Path, bench: Path | None, ood: Path | None) -> dict:
    train = json.loads((run / CONFIG).read_text())["train"]
    m = json.loads((run / METRICS).read_text())
    hist = read_history(run / HISTORY)
    t = m.get("test", {})
    out: dict = {
        "run": run.name,
        "variant": train["variant"],
        "seed": train["seed"],
        "regime": regime_name(train),
        "train": {
            k: train[k]
            for k in (
                "profile",
                "epochs",
                "gamma_cap",
                "gamma_per",
                "gamma_ramp",
                "latent_dim",
                "augment_shift",
            )
            if k in train
        }
        | {"adv_train": train.get("adv_train")}
        | (
            {k: train[k] for k in ("adv_eps", "adv_steps", "adv_select") if k in train}
            if train.get("adv_train")
            else {}
        ),
        "train_minutes": round(sum(r.get("epoch_time_s", 0.0) for r in hist) / 60, 1),
        "final_train_ce": hist[-1].get("train_ce"),
        "test_acc": m.get("test_acc"),
        "same_encoding": t.get("same_encoding"),
        "same_encoding_correct": t.get("same_encoding_correct"),
        "distinct_codes": t.get("distinct_class_codes"),
        "nc1": t.get("nc1"),
        "sigma_w_rel": t.get("sigma_w_rel"),
        "bimodal_dims": m.get("bimodal_dims"),
    }
    if any("val_robust_acc" in r for r in hist):  # --adv-check: PGD-10 robust validation accuracy per epoch
        out["val_robust_acc"] = [r.get("val_robust_acc") for r in hist]
    if "adv_selection" in m:
        out["adv_selection"] = m["adv_selection"]
    if bench is not None:
        e = _bench_entry(bench, run)
        if e is None:
            raise SystemExit(f"{bench}/results.json has no entry for {run.name}")
        adv = e["adversarial"]
        h = adv["headline"]
        served = next(name for name, o in e["reject_options"].items() if o["served"])
        rej = adv["reject"][served]["linf"]
        out["bench"] = {
            "robust_acc_linf_0.05": {k: h["robust_acc_linf"][k] for k in ("value", "ci95", "n")},
            "reject_adaptive_linf_0.02": _curve_at(rej, 0.02),
            "reject_adaptive_linf_0.05": _curve_at(rej, 0.05),
            "robust_acc_linf_0.1": _curve_at(adv["worst_case"]["linf"], 0.1),
            "reject_adaptive_linf_0.1": _curve_at(rej, 0.1),
            "clean_acc": adv["clean_acc"],
            "paper_deepfool": adv["paper_deepfool"]["mean_r_over_x"],
            "deepfool_box": h.get("deepfool_score"),
            "median_min_l2": h.get("median_min_l2"),
            "ood_auroc": {
                s: {d: v[d]["auroc"] for d in ("reliability", "mahalanobis", "max_softmax")}
                for s, v in e["ood"].items()
            },
            "misclf_auroc": {
                d: e["misclassification"][d]["misclassification_auroc"]
                for d in ("reliability", "max_softmax", "mahalanobis")
            },
            "sanity_failed": [f["name"] for f in adv["flags"] if f["ok"] is False],
        }
    if ood is not None:
        o = json.loads(ood.read_text())
        (label,) = [k for k, r in o["runs"].items() if Path(r["artifact"]).parent.name == run.name]
        mn = o["ood"]["mnist"]
        acc = o["acceptance"][label]
        out["ood_eval"] = {
            "mnist_served": {k: mn[f"reliability, {label}"][k] for k in ("auroc", "auroc_ci95", "fpr95")},
            "misclf_served": o["misclassification"][f"reliability, {label}"],
            "misclf_max_softmax": o["misclassification"].get(f"max_softmax, {label}"),
            "id_test_accept": acc["id_test_accept"],
            "mnist_accept": acc["ood"]["mnist"]["accept"],
            "same_encoding_accepted": acc.get("same_encoding_accepted"),
        }
        sel = o.get("selection_val", {})
        if o["runs"][label]["score"] == "vertex_distance":
            if SERVED in sel.get("candidates", {}):  # validation only: what a choice may use
                out["ood_eval"]["val_served"] = sel["candidates"][SERVED]
            if "pick" in sel:  # the rule validation chose, on test
                test = o["post_hoc"]["candidates"][sel["pick"]]
                out["ood_eval"]["val_pick"] = {
                    "rule": sel["pick"],
                    "mnist_auroc": test["ood_auroc"],
                    "fpr95": test["fpr95"],
                    "misclf_auroc": test["test_misclf_auroc"],
                }
        for key, mine in (("mnist_mahalanobis", True), ("mnist_baseline_mahalanobis", False)):
            found = [k for k in mn if k.startswith("mahalanobis") and (f", {label}, " in k) == mine]
            if found:
                out["ood_eval"][key] = {
                    "detector": found[0],
                    **{k: mn[found[0]][k] for k in ("auroc", "auroc_ci95", "fpr95")},
                }
    return out


def _f(v, pct: bool = False, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.0f}" if pct else f"{v:.{digits}f}"


def _ci(d: dict | None, pct: bool = True) -> str:
    if not d or d.get("value") is None:
        return "–"
    lo, hi = d["ci95"]
    return f"{_f(d['value'], pct)} [{_f(lo, pct)}, {_f(hi, pct)}]"


def table(rows: list[dict]) -> str:
    head = [
        "run",
        "regime",
        "train min (as run)",
        "test acc",
        "same-enc all / correct / accepted",
        "NC1",
        "σ_W rel",
        "robust L∞.05 %",
        "robust L∞.1 %",
        "reject adaptive L∞.02 %",
        "reject adaptive L∞.05 %",
        "DeepFool (paper)",
        "MNIST AUROC served [95%]",
        "FPR@95",
        "misclf AUROC served / max-softmax",
        "ID accept",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b, o = r.get("bench", {}), r.get("ood_eval", {})
        mn = o.get("mnist_served", {})
        mc = (
            f"{_f(o['misclf_served']['auroc'])} / {_f((o.get('misclf_max_softmax') or {}).get('auroc'))}"
            if o
            else "–"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    r["run"],
                    r["regime"],
                    f"{r['train_minutes']:.0f}",
                    _f(r["test_acc"], digits=4),
                    f"{_f(r['same_encoding'])} / {_f(r['same_encoding_correct'])} / {_f(o.get('same_encoding_accepted'))}"
                    if r["same_encoding"]
                    else "–",
                    _f(r["nc1"]),
                    _f(r["sigma_w_rel"]),
                    _ci(b.get("robust_acc_linf_0.05")),
                    _ci(b.get("robust_acc_linf_0.1")),
                    _ci(b.get("reject_adaptive_linf_0.02")),
                    _ci(b.get("reject_adaptive_linf_0.05")),
                    _f(b.get("paper_deepfool"), digits=4),
                    f"{_f(mn['auroc'], digits=4)} [{_f(mn['auroc_ci95'][0], digits=4)}, {_f(mn['auroc_ci95'][1], digits=4)}]"
                    if mn
                    else "–",
                    _f(mn.get("fpr95")),
                    mc,
                    _f(o.get("id_test_accept")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _by_regime(rows: list[dict]) -> dict[tuple, list[dict]]:
    """The runs evaluated by ood_eval, grouped by (variant, regime)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "ood_eval" in r:
            groups.setdefault((r["variant"], r["regime"]), []).append(r)
    return groups


def seed_table(rows: list[dict]) -> str:
    """mean ± std over seeds of ood_eval's figures, per (variant, regime) with ≥ 2 seeds."""
    groups = _by_regime(rows)

    def diff(a, b):
        return None if a is None or b is None else a - b

    metrics = {
        "MNIST AUROC, served": lambda o: o["mnist_served"]["auroc"],
        "MNIST AUROC, Mahalanobis on the run's own features": lambda o: (
            o.get("mnist_mahalanobis") or {}
        ).get("auroc"),
        "served − the paired baseline's Mahalanobis (same seed)": lambda o: diff(
            o["mnist_served"]["auroc"], (o.get("mnist_baseline_mahalanobis") or {}).get("auroc")
        ),
        "misclf AUROC, served": lambda o: o["misclf_served"]["auroc"],
        "misclf AUROC, max-softmax (same model)": lambda o: (o.get("misclf_max_softmax") or {}).get("auroc"),
        "served − max-softmax, misclf": lambda o: diff(
            o["misclf_served"]["auroc"], (o.get("misclf_max_softmax") or {}).get("auroc")
        ),
        "ID acceptance": lambda o: o["id_test_accept"],
        "same-enc of accepted": lambda o: o.get("same_encoding_accepted"),
        "validation-picked rule: MNIST AUROC": lambda o: (o.get("val_pick") or {}).get("mnist_auroc"),
        "validation-picked rule: misclf AUROC": lambda o: (o.get("val_pick") or {}).get("misclf_auroc"),
    }
    lines = ["| variant | regime | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (3 + len(metrics))]
    for (variant, regime), rs in groups.items():
        if len(rs) < 2:
            continue
        cells = []
        for name, fn in metrics.items():
            vals = [v for v in (fn(r["ood_eval"]) for r in rs) if v is not None]
            sign = "+" if "−" in name else ""  # differences carry their sign
            cells.append(
                f"{statistics.mean(vals):{sign}.4f} ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else "–"
            )
        lines.append(
            f"| {variant} | {regime} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def validation_table(rows: list[dict]) -> str:
    """The served score on validation data (mean over seeds per regime): the figures a choice of regime may use."""
    groups = {
        g: vs
        for g, rs in _by_regime(rows).items()
        if (vs := [r["ood_eval"]["val_served"] for r in rs if "val_served" in r["ood_eval"]])
    }
    if not groups:
        return ""
    cols = sorted({c for vs in groups.values() for v in vs for c in v})
    lines = [
        "| variant | regime | seeds | " + " | ".join(cols) + " | mean over shifts |",
        "|" + "---|" * (len(cols) + 4),
    ]
    for (variant, regime), vs in groups.items():
        means = {c: statistics.mean(v[c] for v in vs) for c in cols}
        shift = statistics.mean(means[c] for c in cols if c.startswith("val_vs_"))
        lines.append(
            f"| {variant} | {regime} | {len(vs)} | "
            + " | ".join(f"{means[c]:.4f}" for c in cols)
            + f" | {shift:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize", allow_abbrev=False)
    s.add_argument("run", type=Path)
    s.add_argument("--bench", type=Path)
    s.add_argument("--ood", type=Path)
    s.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("table", allow_abbrev=False)
    t.add_argument("summaries", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "summarize":
        write_json_atomic(args.out, summarize(args.run, args.bench, args.ood))
        print(f"wrote {args.out}")
    else:
        rows = sorted(
            (json.loads(f.read_text()) for f in args.summaries),
            key=lambda r: (r["variant"] != "bin_enc", r["regime"], r["seed"]),
        )
        print(table(rows))
        print()
        print(seed_table(rows))
        print()
        print(validation_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
