"""Finding, reusing or training the runs the bench evaluates, and their ONNX artifacts.

For every (variant, seed) the bench reuses the cached training run ``{runs_dir}/{dataset}_{backbone}_{profile}_
{variant}_s{seed}`` or any run whose saved ``config.json["train"]`` equals the requested config (device, threads
and data_dir ignored); it trains only when none exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from training.checkpoint import CHECKPOINT
from training.config import TrainConfig, make_config
from training.data import num_classes_of
from training.models import default_latent_dim
from training.rundir import CONFIG, METRICS
from training.train import train

log = logging.getLogger("robustness.runs")

# min_steps only lengthens a small dataset's run, whose resolved epochs and gamma cap config.json records; runs
# recorded before it existed have none.
IGNORED_CONFIG_KEYS = ("device", "num_threads", "data_dir", "min_steps")
RUN_IN_PROGRESS_S = (
    900  # an unfinished run whose checkpoint changed this recently is being trained by someone
)


class RunInProgressError(RuntimeError):
    """A matching run exists but is unfinished and was written recently (another process is training it)."""


@dataclass(frozen=True)
class ModelRun:
    label: str
    config: TrainConfig
    run_dir: Path
    status: str  # cached / resumed / trained / given


def _comparable(train_cfg: dict) -> dict:
    d = TrainConfig.from_dict(train_cfg).to_dict()
    for k in IGNORED_CONFIG_KEYS:
        d.pop(k, None)
    if d["latent_dim"] is None:  # the width a run resolves to from its class count (config.json records it)
        k = num_classes_of(d["dataset"])
        d["latent_dim"] = default_latent_dim(k) if k is not None else None
    return d


def run_name(cfg) -> str:
    return f"{cfg.dataset}_{cfg.backbone}_{cfg.profile}_{cfg.variant}_s{cfg.seed}"


def _saved_config(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / CONFIG).read_text()).get("train")
    except (OSError, json.JSONDecodeError):
        return None


def _as_requested(saved: dict, cfg) -> dict:
    """``saved`` as the config that asked for it: a small dataset's run records the epochs and gamma cap that
    :func:`training.optim.resolve_schedule` gave it, not those of the profile it was started with."""
    s = TrainConfig.from_dict(saved)
    lengthened = s.min_steps > 0 and s.epochs > cfg.epochs
    if lengthened and s.gamma_cap == max(cfg.gamma0, cfg.gamma_cap * cfg.epochs / s.epochs):
        s = replace(s, epochs=cfg.epochs, gamma_cap=cfg.gamma_cap)
    return s.to_dict()


def find_run(runs_dir: str | Path, cfg) -> Path | None:
    """The run directory whose saved training config equals ``cfg`` (the conventional name is tried first)."""
    runs_dir = Path(runs_dir)
    want = _comparable(cfg.to_dict())
    candidates = [runs_dir / run_name(cfg)]
    if runs_dir.is_dir():
        candidates += sorted(p for p in runs_dir.iterdir() if p.is_dir() and p != candidates[0])
    for d in candidates:
        saved = _saved_config(d) if (d / CONFIG).is_file() else None
        if saved is not None and _comparable(_as_requested(saved, cfg)) == want:
            return d
    return None


def finished_seeds(runs_dir: str | Path, cfg) -> list[int]:
    """Every seed with a finished run in ``runs_dir`` whose config equals ``cfg`` apart from the seed."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    want = {k: v for k, v in _comparable(cfg.to_dict()).items() if k != "seed"}
    seeds = set()
    for d in runs_dir.iterdir():
        saved = _saved_config(d) if (d / METRICS).is_file() and (d / CONFIG).is_file() else None
        if saved is None:
            continue
        c = _comparable(_as_requested(saved, cfg))
        if {k: v for k, v in c.items() if k != "seed"} == want:
            seeds.add(int(c["seed"]))
    return sorted(seeds)


def ensure_run(
    runs_dir: str | Path, cfg, train_missing: bool = True, progress: bool = True
) -> tuple[Path, str]:
    """Reuse, resume or train the run for ``cfg``; returns ``(run_dir, how)`` with how in cached/resumed/trained."""
    found = find_run(runs_dir, cfg)
    if found is not None and (found / METRICS).is_file():
        return found, "cached"
    if not train_missing:
        raise FileNotFoundError(
            f"no finished run for {run_name(cfg)} in {runs_dir} (found: {found}); train it with `python -m training "
            f"--dataset {cfg.dataset} --backbone {cfg.backbone} --profile {cfg.profile} --variant {cfg.variant} "
            f"--seed {cfg.seed} --out {Path(runs_dir) / run_name(cfg)}` or drop --no-train"
        )
    if found is not None and (found / CHECKPOINT).is_file():
        age = time.time() - (found / CHECKPOINT).stat().st_mtime
        if age < RUN_IN_PROGRESS_S:
            raise RunInProgressError(
                f"{found} is unfinished and its checkpoint was written {age:.0f}s ago: another process seems to be "
                "training it; wait for it to finish (metrics.json appears) and rerun the bench"
            )
        log.info("resuming unfinished run %s", found)
        train(cfg, found, resume=True, progress=progress)
        return found, "resumed"
    target = Path(runs_dir) / run_name(cfg)
    if (target / CONFIG).exists():  # same name, different config: do not touch it
        h = hashlib.sha256(json.dumps(_comparable(cfg.to_dict()), sort_keys=True).encode()).hexdigest()[:8]
        target = target.with_name(f"{target.name}-{h}")
    log.info("training %s into %s", run_name(cfg), target)
    train(cfg, target, progress=progress)
    return target, "trained"


def given_runs(dirs: tuple[str, ...], data_dir: str | None) -> list[ModelRun]:
    """Finished run directories evaluated as they are."""
    out = []
    for d in dirs:
        if not (Path(d) / METRICS).is_file() or not (Path(d) / CONFIG).is_file():
            raise FileNotFoundError(f"{d}: expected a finished run directory (config.json, metrics.json)")
        tcfg = TrainConfig.from_dict(_saved_config(Path(d)))
        if data_dir:
            tcfg = replace(tcfg, data_dir=data_dir)
        out.append(ModelRun(f"{tcfg.variant}_s{tcfg.seed}", tcfg, Path(d), "given"))
    return out


def requested_runs(cfg) -> list[ModelRun]:
    """The runs of a :class:`robustness.config.BenchConfig`: given ones, or (variant, seed) found / trained."""
    if cfg.runs:
        models = given_runs(cfg.runs, cfg.data_dir)
    else:
        models = []
        seeds = list(cfg.seeds)
        if cfg.all_seeds and cfg.variants:
            probe = make_config(
                cfg.profile,
                dataset=cfg.dataset,
                data_dir=cfg.data_dir,
                backbone=cfg.backbone,
                variant=cfg.variants[0],
                seed=0,
            )
            seeds = sorted(
                set(seeds)
                | {s for v in cfg.variants for s in finished_seeds(cfg.runs_dir, replace(probe, variant=v))}
            )
        for seed in seeds:
            for variant in cfg.variants:
                tcfg = make_config(
                    cfg.profile,
                    dataset=cfg.dataset,
                    data_dir=cfg.data_dir,
                    backbone=cfg.backbone,
                    variant=variant,
                    seed=seed,
                    device=cfg.device,
                    num_threads=cfg.threads,
                )
                run_dir, how = ensure_run(cfg.runs_dir, tcfg, cfg.train_missing, cfg.progress)
                models.append(ModelRun(f"{variant}_s{seed}", tcfg, run_dir, how))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        seen[m.label] = seen.get(m.label, 0) + 1
        if seen[m.label] > 1:
            models[i] = replace(m, label=f"{m.label}_{seen[m.label]}")
    return models
