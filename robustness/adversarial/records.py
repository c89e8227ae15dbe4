"""The bookkeeping of one model's adversarial evaluation: the fixed sample, the records of the attacks that ran,
the worst case over them (with the ε envelope) and the :class:`Context` every step shares.

* :class:`Sample` holds the fixed sample and its nested tiers (prefixes of the same points): the cheap attacks use
  ``n_cheap`` points, the expensive ones (minimum-norm, AutoAttack components, adaptive attack, probes) the first
  ``n_expensive``, the black-box one the first ``n_blackbox``. Attacks run on the correctly classified points; a
  clean error counts as a failure at every ε.
* Every attack that ran at grid ε values is a :class:`Record` (success per ε and point, and for each reject option
  "misclassified AND accepted"); :func:`worst_case` is the one aggregator: per point ``any`` over the records of a
  norm, with the ε envelope (an adversarial found within a smaller ε counts at every larger ε).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustness import sanity
from robustness.adversarial.plan import AdversarialPlan
from robustness.attacks import AttackOutcome, AttackSpec, Norm, QueryCountingModel, white_box
from robustness.reject_option import RejectOption
from robustness.stats import proportion_of
from training.inference import forward_batches


@dataclass
class Sample:
    """The fixed sample (x, y), which points the model classifies correctly, and the nested tier sizes."""

    x: torch.Tensor
    y: torch.Tensor
    correct: np.ndarray  # (n_cheap,) bool
    sizes: dict[str, int]

    @classmethod
    def build(cls, net: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: AdversarialPlan) -> Sample:
        n_cheap = min(plan.n_cheap, len(x))
        n_exp = min(plan.n_expensive, n_cheap)
        sizes = {"cheap": n_cheap, "expensive": n_exp, "blackbox": min(plan.n_blackbox, n_exp)}
        x, y = x[:n_cheap], y[:n_cheap]
        logits, _ = forward_batches(net, x, 512, x.device)
        correct = logits.argmax(1) == y.cpu().numpy() if n_cheap else np.zeros(0, bool)
        return cls(x, y, correct, sizes)

    def rows(self, tier: str) -> np.ndarray:
        """Correctly classified mask over the tier's points."""
        return self.correct[: self.sizes[tier]]

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        it = torch.as_tensor(idx, device=self.x.device, dtype=torch.long)
        return self.x[it], self.y[it]


@dataclass
class Record:
    """One attack that ran: success (len(grid ε), n_tier) and, per reject option, misclassified AND accepted."""

    name: str
    norm: Norm
    success: np.ndarray
    fooled: dict[str, np.ndarray] = field(default_factory=dict)
    entry: dict = field(default_factory=dict)


def fit_to_tier(mask: np.ndarray, n: int) -> np.ndarray:
    """Restrict (longer tier) or pad with False (shorter tier: not attacked) a (E, m) mask to (E, n)."""
    out = np.zeros((mask.shape[0], n), dtype=bool)
    m = min(n, mask.shape[1])
    out[:, :m] = mask[:, :m]
    return out


def envelope(mask: np.ndarray, eps: list[float]) -> np.ndarray:
    """Cumulative OR over increasing ε: an adversarial found within a smaller ε is valid at every larger ε."""
    order = np.argsort(np.asarray(eps, dtype=np.float64), kind="stable")
    out = np.empty_like(mask, dtype=bool)
    out[order] = np.logical_or.accumulate(np.asarray(mask, dtype=bool)[order], axis=0)
    return out


def worst_case(
    records: list[Record],
    norm: Norm,
    eps: list[float],
    n: int,
    option: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Per point and ε: broken by any record of ``norm`` (for ``option``: misclassified AND accepted by it).

    Returns the (len(eps), n) mask after the ε envelope and the names of the records folded in.
    """
    picked = [r for r in records if r.norm == norm and (option is None or option in r.fooled)]
    mask = np.zeros((len(eps), n), dtype=bool)
    for r in picked:
        mask |= fit_to_tier(r.success if option is None else r.fooled[option], n)
    return envelope(mask, eps), [r.name for r in picked]


def robust_points(correct: np.ndarray, broken: np.ndarray) -> np.ndarray:
    """(E, n): correctly classified and not broken."""
    return np.asarray(correct, dtype=bool)[None, :] & ~np.asarray(broken, dtype=bool)


def seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _floats(values) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def curve(correct: np.ndarray, broken: np.ndarray, cols: list[int] | None = None) -> dict:
    """Robust accuracy per ε with Wilson 95% intervals (``None`` at ε outside ``cols``)."""
    robust = robust_points(correct, broken)
    props = [proportion_of(r) if cols is None or k in cols else None for k, r in enumerate(robust)]
    return {
        "robust_acc": [p["value"] if p else None for p in props],
        "ci95": [p["ci95"] if p else None for p in props],
    }


@dataclass
class Context:
    """Everything one model's evaluation shares: the model, the sample, the reject options and what ran."""

    net: nn.Module
    plan: AdversarialPlan
    sample: Sample
    options: list[RejectOption]
    blackbox: QueryCountingModel | None
    seed: int
    bar: tqdm
    records: list[Record] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    flags: list[sanity.Flag] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fm = white_box(self.net)

    def tick(self, what: str) -> None:
        self.bar.set_postfix_str(what)

    def add(self, record: Record) -> Record:
        self.records.append(record)
        return record


def fold_outcome(
    ctx: Context,
    spec: AttackSpec,
    idx: np.ndarray,
    out: AttackOutcome,
    cols: list[int],
    name: str | None = None,
) -> Record:
    """Fold an outcome on the tier points ``idx`` at grid columns ``cols`` into a :class:`Record`."""
    n_t = ctx.sample.sizes[spec.tier]
    grid = ctx.plan.eps(spec.norm)
    success = np.zeros((len(grid), n_t), dtype=bool)
    success[np.ix_(cols, idx)] = out.success
    rec = Record(name or spec.name, spec.norm, success)
    _, y = ctx.sample.take(idx)
    for opt in ctx.options:
        fooled = np.zeros_like(success)
        for k, c in enumerate(cols):
            if out.advs is not None and len(idx):
                fooled[c, idx] = out.success[k] & opt.fooled(ctx.net, out.advs[k], y)
        rec.fooled[opt.name] = fooled
    rows = ctx.sample.rows(spec.tier)
    rec.entry = {
        "norm": spec.norm,
        "kind": spec.kind,
        "access": spec.access,
        "tier": spec.tier,
        "library": spec.library,
        "description": spec.description,
        "n": int(n_t),
        "n_attacked": int(len(idx)),
        "eps": [grid[c] for c in cols],
        "seconds": round(out.seconds, 3),
        **curve(rows, success[cols], None),
    }
    if out.queries is not None:
        rec.entry["queries_per_point"] = out.queries / max(len(idx), 1)
    if out.min_norm is not None:
        rec.entry["min_norm"] = _min_norm_entry(ctx, spec, idx, out.min_norm)
    return rec


def _min_norm_entry(ctx: Context, spec: AttackSpec, idx: np.ndarray, min_norm: np.ndarray) -> dict:
    found = np.isfinite(min_norm)
    entry = {
        "per_point": _floats(_scatter(ctx.sample.sizes[spec.tier], idx, min_norm, np.nan)),
        "found_share": float(found.mean()) if len(found) else None,
        "median": float(np.median(min_norm)) if len(found) else None,
    }
    if spec.name == "deepfool_l2" and found.any():
        x, _ = ctx.sample.take(idx)
        ratio = min_norm[found] / np.maximum(x.flatten(1).norm(dim=1).cpu().numpy()[found], 1e-12)
        entry["r_over_x"] = {
            "mean": float(ratio.mean()),
            "median": float(np.median(ratio)),
            "n": int(found.sum()),
            "definition": "||r||_2/||x||_2 over correctly classified points; r = unclipped DeepFool "
            "perturbation in pixel space [0, 1], overshoot 0.02, box-constrained",
        }
    return entry


def _scatter(n: int, idx: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(n, fill, dtype=np.float64)
    out[idx] = values
    return out


def add_adaptive_record(
    ctx: Context,
    name: str,
    norm: Norm,
    option: str,
    grid: list[float],
    n: int,
    idx: np.ndarray,
    epsilons: list[float],
    success: np.ndarray,
) -> None:
    """Fold one adaptive run (successes on the sample rows ``idx`` at ``epsilons``) into the worst case."""
    mask = np.zeros((len(grid), n), dtype=bool)
    mask[np.ix_([grid.index(e) for e in epsilons], idx)] = success
    ctx.add(Record(name, norm, mask, {option: mask}))
