"""``python -m robustness.bench``: adversarial robustness, reject option and OOD detection of the four heads.

For every (variant, seed) the bench reuses the cached training run (:mod:`robustness.runs`), exports the ONNX
artifact if missing, then measures each model (:mod:`robustness.evaluate`): the attack ensemble, the adaptive attack
on the reject option and the sanity flags (:mod:`robustness.adversarial`), OOD and misclassification detection
(:mod:`robustness.ood`); it aggregates over seeds with paired tests (:mod:`robustness.aggregate`), compares with the
paper (:mod:`robustness.paper`) and writes ``results.json``, ``report.md`` and PNG plots into ``--out``
(:mod:`robustness.report`), and a compact summary into each artifact's unsigned annex.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import foolbox
import numpy as np
import torch
import torchattacks
from tqdm.auto import tqdm

from robustness.aggregate import aggregate, paired_comparisons
from robustness.config import BenchConfig, build_parser, config_from_args
from robustness.evaluate import Inputs, evaluate_model
from robustness.ood import make_ood_sets
from robustness.paper import paper_comparison
from robustness.report import SCHEMA, write_report
from robustness.runs import RunInProgressError, requested_runs
from serving.artifact import write_annex
from training.data import load_dataset
from training.inference import to_tensor

log = logging.getLogger("robustness.bench")


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[: min(n, n_total)])


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "foolbox": foolbox.__version__,
           "torchattacks": torchattacks.__version__,
           "numpy": np.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "loadavg_start": list(os.getloadavg())}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def bench_inputs(cfg: BenchConfig, tcfg, cache: dict, ood_sets: list | None) -> tuple[Inputs, dict]:
    """The data of a run's config (cached) and the points every model sees (chosen by the bench seed)."""
    key = (tcfg.dataset, tcfg.data_dir, tcfg.val_fraction, tcfg.seed)
    if key not in cache:
        cache[key] = load_dataset(tcfg.dataset, tcfg.data_dir, tcfg.val_fraction, tcfg.seed)
    data = cache[key]
    info: dict = {}
    if ood_sets is None:
        ood_sets, skipped = make_ood_sets(data.name, data.test.images, data.input_shape, cfg.n_ood, cfg.seed,
                                          cfg.ood_data_dir, cfg.ood_sets)
        info = {"ood_sets": {s.name: {"n": int(len(s.images)), "source": s.source} for s in ood_sets},
                "skipped_ood_sets": {s.name: s.reason for s in skipped}}
    adv_idx = subsample(len(data.test), cfg.adversarial.n_cheap, cfg.seed)
    np.random.default_rng(cfg.seed + 1).shuffle(adv_idx)
    inputs = Inputs(data, to_tensor(data.test.images[adv_idx]), torch.from_numpy(data.test.labels[adv_idx]),
                    ood_sets, subsample(len(data.test), cfg.n_id, cfg.seed + 2),
                    subsample(len(data.train), cfg.n_fit, cfg.seed + 3))
    return inputs, info


def annex_summary(entry: dict, bench: dict) -> dict:
    adv = entry["adversarial"]
    h = adv["headline"]
    return {
        "schema": bench["schema"], "created_at": bench["created_at"], "command": bench["config"]["command"],
        "n_points": adv["n"], "clean_acc_sample": adv["clean_acc"]["cheap"],
        "robust_acc_linf": h.get("robust_acc_linf", {}).get("value"), "robust_acc_l2": h.get("robust_acc_l2", {})
        .get("value"), "eps": {"linf": h.get("robust_acc_linf", {}).get("eps"), "l2": h.get("robust_acc_l2", {})
                               .get("eps")},
        "reject_adaptive": {opt: {n: v.get("value") for n, v in by.items()} for opt, by in h.get("reject", {}).items()},
        "deepfool_score": h.get("deepfool_score"),
        "sanity_failed": [f["name"] for f in adv["flags"] if f["ok"] is False],
        "ood_auroc_reliability": {s: round(v["reliability"]["auroc"], 4) for s, v in entry["ood"].items()},
        "accept_rate": entry["calibration"]["accept_rate"], "acc_accepted": entry["calibration"]["acc_accepted"],
    }


def one_line(label: str, e: dict) -> str:
    h = e["adversarial"]["headline"]

    def fig(d) -> str:
        return "n/a" if not d or d.get("value") is None else (f"{100 * d['value']:.0f}% "
                                                              f"[{100 * d['ci95'][0]:.0f}, {100 * d['ci95'][1]:.0f}]")

    fails = [f["name"] for f in e["adversarial"]["flags"] if f["ok"] is False]
    rej = "; ".join(f"reject {o} adaptive {fig(v.get('linf'))}" for o, v in h.get("reject", {}).items())
    return (f"{label}: robust acc L∞ {h.get('robust_acc_linf', {}).get('eps')}: {fig(h.get('robust_acc_linf'))}; "
            f"{rej}; {e['adversarial']['seconds']:.0f}s adversarial"
            + (f"; SANITY FAILED: {', '.join(fails)}" if fails else ""))


def write_annexes(results: dict) -> None:
    failures = {}
    for entry in results["models"].values():
        try:
            write_annex(entry["artifact"]["path"], {"robustness": annex_summary(entry, results)})
        except Exception as err:  # the report is written; a read-only artifact must not lose it
            failures[entry["label"]] = f"{type(err).__name__}: {err}"
    if failures:
        log.warning("could not write the artifact annex: %s", failures)


def run_bench(cfg: BenchConfig) -> dict:
    """Run the whole bench and write the report; returns the results dict."""
    t_all = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runs = requested_runs(cfg)
    results: dict = {"schema": SCHEMA, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": cfg.to_dict(),
                     "environment": environment(), "models": {}, "ood_sets": {}, "skipped_ood_sets": {}}
    arrays: dict = {}
    cache: dict = {}
    ood_sets = None
    for run in (bar := tqdm(runs, desc="models", disable=not cfg.progress)):
        bar.set_postfix_str(run.label)
        inputs, info = bench_inputs(cfg, run.config, cache, ood_sets)
        ood_sets = inputs.ood_sets
        results.update(info)
        results["models"][run.label], arrays[run.label] = evaluate_model(cfg, run, inputs)
        tqdm.write(one_line(run.label, results["models"][run.label]))
    results["aggregate"] = aggregate(results["models"])
    results["paired"] = paired_comparisons(results["models"])
    results["paper_comparison"] = paper_comparison(results["aggregate"], results["models"])
    results["seconds_total"] = round(time.perf_counter() - t_all, 2)
    results["environment"]["loadavg_end"] = list(os.getloadavg())
    write_report(results, arrays, Path(cfg.out))
    write_annexes(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # Foolbox logs chatter on the root logger
    log.setLevel(logging.INFO)
    try:
        cfg = config_from_args(args, argv)
        results = run_bench(cfg)
    except (FileNotFoundError, RunInProgressError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [(lbl, f["name"]) for lbl, e in results["models"].items() for f in e["adversarial"]["flags"]
              if f["ok"] is False]
    print(f"wrote {Path(cfg.out) / 'report.md'} and results.json in {results['seconds_total']:.0f}s")
    if failed:
        print("SANITY FLAGS FAILED: " + ", ".join(f"{lbl}:{n}" for lbl, n in failed), file=sys.stderr)
        if args.strict:
            return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
