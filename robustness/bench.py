"""``python -m robustness.bench``: adversarial robustness, reject option and OOD detection of the four heads.

For every (variant, seed) the bench reuses the cached training run (:mod:`robustness.runs`), exports the ONNX
artifact if missing, then measures each model (:mod:`robustness.evaluate`): the attack ensemble, the adaptive attack
on the reject option and the sanity flags (:mod:`robustness.adversarial`), OOD and misclassification detection
(:mod:`robustness.ood`); it aggregates over seeds with paired tests (:mod:`robustness.aggregate`), compares with the
paper (:mod:`robustness.paper`) and writes ``results.json``, ``report.md`` and PNG plots into ``--out``
(:mod:`robustness.report`), and a compact summary into each artifact's unsigned annex.

Under ``torchrun --nproc_per_node N -m robustness.bench ...`` the models are dealt out to the ranks (model *i* to
rank *i mod N*; rank 0 resolves, and if needed trains, the runs first), each rank measures its models exactly as one
process would (every measurement is seeded per model, never by what ran before it) and rank 0 gathers the entries
in the one-process order and writes the report: the same figures as one process. The test points of one model are
not split, because the attacks' random starts are drawn per batch: a point's outcome would depend on its shard.

A model that cannot be scored (a ``bin_enc`` latent without one vertex per class: :class:`GeometryError`) does not
stop the bench: the others are measured, the report names it and why, and the exit status is 4.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import foolbox
import numpy as np
import torch
import torchattacks
from tqdm.auto import tqdm

from robustness.aggregate import aggregate, paired_comparisons
from robustness.bench_cli import build_parser, config_from_args
from robustness.config import BenchConfig, relative_path
from robustness.evaluate import Inputs, evaluate_model
from robustness.onnx_bench import OnnxModel, evaluate_onnx, onnx_models
from robustness.ood_sets import make_ood_sets
from robustness.outside import OutsideModel, evaluate_outside, outside_models
from robustness.paper import paper_comparison
from robustness.report import write_report
from robustness.results import SCHEMA
from robustness.runs import ModelRun, RunInProgressError, requested_runs
from serving.artifact_format import write_annex
from training.data import load_run_data
from training.distributed import (
    SINGLE,
    DistContext,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown,
)
from training.inference import to_tensor
from training.reliability import GeometryError

log = logging.getLogger("robustness.bench")
# Ranks wait for rank 0 while it trains missing runs (minutes to hours): a generous process-group timeout.
BENCH_GROUP_TIMEOUT_S = 24 * 3600


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[: min(n, n_total)])


def environment() -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "foolbox": foolbox.__version__,
        "torchattacks": torchattacks.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def bench_inputs(cfg: BenchConfig, tcfg, cache: dict, ood_sets: list | None) -> tuple[Inputs, dict]:
    """The data of a run's config (cached) and the points every model sees (chosen by the bench seed)."""
    key = (tcfg.dataset, tcfg.data_dir, tcfg.val_fraction, tcfg.seed, tcfg.image_size, tcfg.test_fraction)
    if key not in cache:
        cache[key] = load_run_data(tcfg)
    data = cache[key]
    info: dict = {}
    if ood_sets is None:
        ood_sets, skipped = make_ood_sets(
            data.name, data.test.images, data.input_shape, cfg.n_ood, cfg.seed, cfg.ood_data_dir, cfg.ood_sets
        )
        info = {
            "ood_sets": {s.name: {"n": int(len(s.images)), "source": s.source} for s in ood_sets},
            "skipped_ood_sets": {s.name: s.reason for s in skipped},
        }
    adv_idx = subsample(len(data.test), cfg.adversarial.n_cheap, cfg.seed)
    np.random.default_rng(cfg.seed + 1).shuffle(adv_idx)
    inputs = Inputs(
        data,
        to_tensor(data.test.images[adv_idx]),
        torch.from_numpy(data.test.labels[adv_idx]),
        ood_sets,
        subsample(len(data.test), cfg.n_id, cfg.seed + 2),
        subsample(len(data.train), cfg.n_fit, cfg.seed + 3),
        adv_idx,
    )
    return inputs, info


def annex_summary(entry: dict, bench: dict) -> dict:
    adv = entry["adversarial"]
    h = adv["headline"]
    return {
        "schema": bench["schema"],
        "created_at": bench["created_at"],
        "command": bench["config"]["command"],
        "n_points": adv["n"],
        "clean_acc_sample": adv["clean_acc"]["cheap"],
        "robust_acc_linf": h.get("robust_acc_linf", {}).get("value"),
        "robust_acc_l2": h.get("robust_acc_l2", {}).get("value"),
        "eps": {"linf": h.get("robust_acc_linf", {}).get("eps"), "l2": h.get("robust_acc_l2", {}).get("eps")},
        "reject_adaptive": {
            opt: {n: v.get("value") for n, v in by.items()} for opt, by in h.get("reject", {}).items()
        },
        "deepfool_score": h.get("deepfool_score"),
        "sanity_failed": [f["name"] for f in adv["flags"] if f["ok"] is False],
        "ood_auroc_reliability": {s: round(v["reliability"]["auroc"], 4) for s, v in entry["ood"].items()},
        "accept_rate": entry["calibration"]["accept_rate"],
        "acc_accepted": entry["calibration"]["acc_accepted"],
    }


def one_line(label: str, e: dict) -> str:
    h = e["adversarial"]["headline"]

    def fig(d) -> str:
        return (
            "n/a"
            if not d or d.get("value") is None
            else (f"{100 * d['value']:.0f}% [{100 * d['ci95'][0]:.0f}, {100 * d['ci95'][1]:.0f}]")
        )

    fails = [f["name"] for f in e["adversarial"]["flags"] if f["ok"] is False]
    rej = "; ".join(f"reject {o} adaptive {fig(v.get('linf'))}" for o, v in h.get("reject", {}).items())
    return (
        f"{label}: robust acc L∞ {h.get('robust_acc_linf', {}).get('eps')}: {fig(h.get('robust_acc_linf'))}; "
        f"{rej}; {e['adversarial']['seconds']:.0f}s adversarial"
        + (f"; SANITY FAILED: {', '.join(fails)}" if fails else "")
    )


def blackbox_line(label: str, e: dict) -> str:
    r = e["robust"]

    def fig(d) -> str:
        return "n/a" if not d or d.get("value") is None else f"<= {100 * d['value']:.0f}%"

    fails = [f["name"] for f in e["flags"] if f["ok"] is False]
    return (
        f"{label} (black-box, upper bounds): robust acc L∞ {fig(r.get('linf'))}, L2 {fig(r.get('l2'))}; "
        + "; ".join(f"reject {o} L∞ {fig(v['linf'])}" for o, v in e["reject"].items())
        + f"; {e['seconds']['total']:.0f}s"
        + (f"; SANITY FAILED: {', '.join(fails)}" if fails else "")
    )


def write_annexes(results: dict) -> None:
    failures = {}
    for entry in results["models"].values():
        try:
            write_annex(entry["artifact"]["path"], {"robustness": annex_summary(entry, results)})
        except Exception as err:  # the report is written; a read-only artifact must not lose it
            failures[entry["label"]] = f"{type(err).__name__}: {err}"
    if failures:
        log.warning("could not write the artifact annex: %s", failures)


def _threads(cfg: BenchConfig, ctx: DistContext) -> None:
    """``--threads``, else the node's cores shared by the processes on it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif ctx.distributed and cfg.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.local_world_size))


RUN_ERRORS = (
    FileNotFoundError,
    RunInProgressError,
    ValueError,
)  # a user's mistake: "error: ...", exit status 2
EXIT_SANITY, EXIT_UNMEASURED = 3, 4


def unmeasured_entry(run: ModelRun, err: Exception) -> dict:
    """What the report says of a model the bench could not measure (e.g. ``bin_enc`` without one vertex per class)."""
    return {
        "label": run.label,
        "variant": run.config.variant,
        "seed": run.config.seed,
        "run_dir": relative_path(str(run.run_dir)),
        "reason": str(err),
    }


def unmeasured_text(results: dict) -> str:
    return "; ".join(f"{label}: {e['reason']}" for label, e in results["unmeasured"].items())


def _resolve_runs(cfg: BenchConfig, ctx: DistContext) -> list:
    """Rank 0 resolves (and trains) the runs; every rank gets the list, or rank 0's error raised on every rank."""
    try:
        found = requested_runs(cfg) if ctx.is_main else None
        found = found + outside_models(cfg, found) if ctx.is_main else None
        found = found + onnx_models(cfg, found) if ctx.is_main else None
    except RUN_ERRORS as err:
        if not ctx.distributed:
            raise
        found = err
    found = broadcast_object(found, ctx)
    if isinstance(found, BaseException):
        raise found
    return found


def described_by_runs(cfg: BenchConfig, runs: list[ModelRun]) -> BenchConfig:
    """``cfg`` with the dataset and backbone(s) of the runs it was given (``--evaluate``), not the command line's
    defaults, so that results.json records what was measured. A bench draws its points and OOD sets once, so the
    runs must share one dataset (ValueError otherwise); differing backbones are listed, comma-separated."""
    if not cfg.runs:
        return cfg
    datasets = sorted({r.config.dataset for r in runs})
    if len(datasets) > 1:
        raise ValueError(
            "one bench measures one dataset; the runs given are of "
            + ", ".join(
                f"{d} ({', '.join(r.label for r in runs if r.config.dataset == d)})" for d in datasets
            )
        )
    return replace(cfg, dataset=datasets[0], backbone=", ".join(sorted({r.config.backbone for r in runs})))


def run_bench(cfg: BenchConfig, ctx: DistContext = SINGLE) -> dict | None:
    """Run the whole bench and write the report; returns the results dict (on rank 0; ``None`` on other ranks)."""
    t_all = time.perf_counter()
    _threads(cfg, ctx)
    runs = _resolve_runs(cfg, ctx)
    cfg = described_by_runs(cfg, runs)
    results: dict = {
        "schema": SCHEMA,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(),
        "environment": {**environment(), "world_size": ctx.world_size},
        "models": {},
        "unmeasured": {},
        "blackbox": {},
        "ood_sets": {},
        "skipped_ood_sets": {},
    }
    mine = [(i, run) for i, run in enumerate(runs) if i % ctx.world_size == ctx.rank]
    done, cache, ood_sets = [], {}, None
    for i, run in (bar := tqdm(mine, desc="models", disable=not (cfg.progress and ctx.is_main))):
        bar.set_postfix_str(run.label)
        inputs, info = bench_inputs(cfg, run.config, cache, ood_sets)
        ood_sets = inputs.ood_sets
        try:
            if isinstance(run, OnnxModel):
                entry, arr = evaluate_onnx(cfg, run, inputs)
            else:
                entry, arr = (evaluate_outside if isinstance(run, OutsideModel) else evaluate_model)(
                    cfg, run, inputs
                )
        except GeometryError as err:  # this model has no served score; the others are still measured
            entry, arr = unmeasured_entry(run, err), None
            tqdm.write(f"{run.label}: NOT MEASURED: {err}")
        else:
            tqdm.write((blackbox_line if isinstance(run, OnnxModel) else one_line)(run.label, entry))
        done.append((i, run.label, entry, arr, info))
    gathered = gather_objects(done, ctx)
    if not ctx.is_main:
        return None
    arrays: dict = {}
    for _, label, entry, arr, info in sorted((d for part in gathered for d in part), key=lambda d: d[0]):
        results.update(info)
        if arr is None:
            results["unmeasured"][label] = entry
        elif entry.get("access") == "black-box":
            results["blackbox"][label] = entry
        else:
            results["models"][label], arrays[label] = entry, arr
    if not results["models"] and not results["blackbox"]:
        raise GeometryError("no model could be measured: " + unmeasured_text(results))
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
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s"
    )  # Foolbox logs chatter on the root logger
    log.setLevel(logging.INFO)
    ctx = SINGLE
    try:
        cfg = config_from_args(args, argv)
        ctx = init_distributed(cfg.device, timeout_s=BENCH_GROUP_TIMEOUT_S)
        results = run_bench(cfg, ctx)
    except RUN_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown(ctx)
    if results is None:  # a rank other than 0: rank 0 reports
        return 0
    failed = [
        (lbl, f["name"])
        for lbl, e in results["models"].items()
        for f in e["adversarial"]["flags"]
        if f["ok"] is False
    ]
    failed += [
        (lbl, f["name"]) for lbl, e in results["blackbox"].items() for f in e["flags"] if f["ok"] is False
    ]
    print(f"wrote {Path(cfg.out) / 'report.md'} and results.json in {results['seconds_total']:.0f}s")
    if failed:
        print("SANITY FLAGS FAILED: " + ", ".join(f"{lbl}:{n}" for lbl, n in failed), file=sys.stderr)
    if results["unmeasured"]:
        print("NOT MEASURED: " + unmeasured_text(results), file=sys.stderr)
        return EXIT_UNMEASURED
    return EXIT_SANITY if failed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
