"""``python -m robustness.compare``: paired comparison of models benched in different runs, on the same points.

A bench pairs only the models it measured itself, by seed (:func:`robustness.aggregate.paired_comparisons`). This
pairs any two models whose ``results.json`` were made on the same adversarial points by the same attacks (same
dataset, bench seed, sample size and attack plan, where a larger ``--adaptive-escalations`` cap on one side is the
same plan if the other side converged within its own; the stored point indices where both files have them), e.g. two
training regimes benched apart, with the exact McNemar test on every headline figure. Several pairs (one per seed) are also pooled into one test on all
their points, the discordant counts summed::

    python -m robustness.compare research/bench/a/results.json:bin_enc_s0 research/bench/b/results.json:bin_enc_s0 \\
        [A2 B2 ...] [--json OUT]

A reference is ``RESULTS.json[:LABEL]``; the label may be left out when the file holds one model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustness.aggregate import compare_points, headline_points
from robustness.results import load_results
from robustness.stats import mcnemar
from training.jsonio import write_json_atomic


class CompareError(ValueError):
    """A reference that cannot be read, or two models not measured on the same points."""


@dataclass(frozen=True)
class Model:
    ref: str
    config: dict
    entry: dict

    @property
    def points(self) -> dict:
        """What fixes a model's adversarial points and the attacks on them (compared between the two sides)."""
        return {
            "dataset": self.config.get("dataset"),
            "bench seed": self.config.get("seed"),
            "points": self.entry["adversarial"]["n"]["cheap"],
            **{f"attack plan {k}": v for k, v in self.config.get("adversarial", {}).items()},
        }


def load_model(ref: str) -> Model:
    """The entry named by ``RESULTS.json[:LABEL]``."""
    path, _, label = ref.rpartition(":") if ":" in ref and not Path(ref).is_file() else (ref, "", "")
    try:
        results = load_results(path)
        models = results["models"]
        config = results["config"]
    except FileNotFoundError:
        raise CompareError(f"{ref}: no such results file {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CompareError(f"{ref}: not a bench results.json ({type(err).__name__}: {err})") from None
    if not label:
        if len(models) != 1:
            raise CompareError(
                f"{ref}: the file holds {len(models)} models; name one as {path}:LABEL ({', '.join(models)})"
            )
        label = next(iter(models))
    if label not in models:
        raise CompareError(f"{ref}: no model {label!r} in {path} (it has {', '.join(models)})")
    entry = models[label]
    try:
        entry["adversarial"]["n"]["cheap"], entry["adversarial"]["headline"]
    except (KeyError, TypeError):
        raise CompareError(
            f"{ref}: the model has no adversarial headline figures (bench made without attacks?)"
        ) from None
    return Model(ref, config, entry)


ESCALATIONS = "attack plan adaptive_escalations"


def converged_adaptive(m: Model) -> bool:
    """Whether every adaptive convergence check of the model stopped because a doubling moved nothing (so a bench
    allowing more doublings would have run exactly the same attacks on it)."""
    flags = [
        f
        for f in m.entry["adversarial"].get("flags", [])
        if f.get("name", "").startswith("adaptive_converged")
    ]
    return bool(flags) and all(f.get("ok") is True for f in flags)


def check_same_points(a: Model, b: Model) -> str | None:
    """Raise :class:`CompareError` unless both models were attacked on the same points by the same attack plan.

    Plans that differ only in how many doublings the adaptive attack's convergence check may take
    (``--adaptive-escalations``) count as the same when the model with the smaller cap converged within it: the larger
    cap would have run the same attacks on it. Returns a note saying so, or ``None``."""
    pa, pb = a.points, b.points
    diff = {k: (pa.get(k), pb.get(k)) for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k)}
    note = None
    if ESCALATIONS in diff and all(isinstance(v, int) for v in diff[ESCALATIONS]):
        va, vb = diff[ESCALATIONS]
        lower = a if va < vb else b
        if converged_adaptive(lower):
            del diff[ESCALATIONS]
            note = (
                f"{a.ref} / {b.ref}: adaptive escalations {va} vs {vb}; {lower.ref} converged within "
                f"{min(va, vb)}, so it met the same attacks as under {max(va, vb)}"
            )
    if diff:
        raise CompareError(
            f"{a.ref} and {b.ref} were not measured on the same points: "
            + "; ".join(f"{k} {va} vs {vb}" for k, (va, vb) in sorted(diff.items()))
        )
    ia, ib = a.entry["adversarial"].get("points"), b.entry["adversarial"].get("points")
    if ia is not None and ib is not None and list(ia) != list(ib):
        raise CompareError(f"{a.ref} and {b.ref}: the stored test indices of the adversarial points differ")
    return note


def compare(pairs: Sequence[tuple[Model, Model]]) -> dict:
    """Per pair, McNemar on every headline figure; pooled over the pairs, one McNemar per figure pair."""
    rows: list[dict] = []
    pooled_points: dict[tuple[str, str], tuple[list, list]] = {}
    notes: list[str] = []
    for a, b in pairs:
        if note := check_same_points(a, b):
            notes.append(note)
        pa, pb = headline_points(a.entry), headline_points(b.entry)
        for row in compare_points(a.entry["label"], pa, b.entry["label"], pb):
            rows.append({"a_ref": a.ref, "b_ref": b.ref, **row})
            xa, xb = pooled_points.setdefault((row["figure_a"], row["figure_b"]), ([], []))
            xa.append(pa[row["figure_a"]])
            xb.append(pb[row["figure_b"]])
    pooled = [
        {"figure_a": fa, "figure_b": fb, "pairs": len(xa), **mcnemar(np.concatenate(xa), np.concatenate(xb))}
        for (fa, fb), (xa, xb) in pooled_points.items()
    ]
    return {"pairs": [[a.ref, b.ref] for a, b in pairs], "rows": rows, "pooled": pooled, "notes": notes}


def markdown(result: dict) -> str:
    """The comparison as markdown tables: one row per pair and figure, then the pooled rows (several pairs)."""

    def fmt(r: dict, first: list[str]) -> str:
        diff = "–" if r["diff"] is None else f"{100 * r['diff']:+.1f}"
        return (
            "| "
            + " | ".join(
                first
                + [
                    r["figure_a"],
                    r["figure_b"],
                    str(r["n"]),
                    str(r["a_only"]),
                    str(r["b_only"]),
                    diff,
                    f"{r['p_value']:.3g}",
                ]
            )
            + " |"
        )

    tail = [
        "figure A",
        "figure B",
        "points",
        "held by A only",
        "held by B only",
        "A − B (% points)",
        "p (exact)",
    ]
    lines = ["| A | B | " + " | ".join(tail) + " |", "|" + "---|" * (len(tail) + 2)]
    lines += [fmt(r, [r["a_ref"], r["b_ref"]]) for r in result["rows"]]
    if len(result["pairs"]) > 1:
        lines += [
            "",
            f"Pooled over the {len(result['pairs'])} pairs (all their points, discordant counts summed):",
            "",
            "| pairs | " + " | ".join(tail) + " |",
            "|" + "---|" * (len(tail) + 1),
        ]
        lines += [fmt(r, [str(r["pairs"])]) for r in result["pooled"]]
    if result.get("notes"):
        lines += ["", *(f"Note: {n}" for n in result["notes"])]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m robustness.compare", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    p.add_argument(
        "refs",
        nargs="+",
        metavar="RESULTS[:LABEL]",
        help="pairs of models, A B [A2 B2 ...]: a bench's results.json and the model's label",
    )
    p.add_argument("--json", type=Path, help="also write the comparison here (JSON)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if len(args.refs) % 2:
            raise CompareError(f"models come in pairs (A B [A2 B2 ...]); got {len(args.refs)} references")
        models = [load_model(r) for r in args.refs]
        result = compare(list(zip(models[::2], models[1::2], strict=True)))
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
