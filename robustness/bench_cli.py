"""The bench's command line: :func:`build_parser` (its help states each default, per --profile where the profiles
differ) and :func:`config_from_args` (the :class:`robustness.config.BenchConfig` of a parsed command line)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

from robustness.adaptive import AdaptiveBudget
from robustness.adversarial import AdversarialPlan
from robustness.attacks import REGISTRY
from robustness.config import BenchConfig, relative_path
from robustness.ood_sets import ALL_SETS
from robustness.profiles import BENCH_PROFILES, THOROUGH, THOROUGH_SQUARE_QUERIES
from training.models import VARIANTS


def parse_floats(text: str | None) -> list[float] | None:
    """A comma/space-separated ε grid, sorted, with 0 added."""
    if text is None:
        return None
    vals = sorted({float(v) for v in text.replace(",", " ").split()})
    if any(v < 0 for v in vals):
        raise ValueError(f"ε values must be >= 0, got {vals}")
    return vals if 0.0 in vals else [0.0, *vals]


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    """``C,H,W`` -> a tuple of three positive ints."""
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"--onnx-input-shape expects C,H,W (three positive integers), got {text!r}")
    return dims


def parse_names(text: str | None) -> list[str] | None:
    return None if text is None else [v for v in text.replace(",", " ").split() if v]


def names_among(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """The comma/space-separated names of ``text``, each one of ``allowed`` (ValueError naming the others)."""
    names = parse_names(text) or []
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; expected some of {', '.join(allowed)}")
    return names


def _grid(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _per_profile(get) -> str:
    """``100 quick / 2000 paper``: a value of each bench profile."""
    return " / ".join(f"{get(BENCH_PROFILES[p])} {p}" for p in BENCH_PROFILES)


def _adv(key: str):
    return lambda prof: prof["adversarial"][key]


DEFAULT_PLAN = AdversarialPlan()


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` only where there is a fixed default (the others state theirs, per profile)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []):
            return action.help
        return super()._get_help_string(action)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Which training runs the bench finds or trains."""
    p.add_argument(
        "--dataset", default="fashion-mnist", help="dataset of the runs (with --evaluate: the runs' own)"
    )
    p.add_argument(
        "--variants",
        default="bin_enc,no_pen,lin_pen,nonlin_pen",
        help=f"comma-separated heads, some of: {', '.join(VARIANTS)}",
    )
    p.add_argument("--backbone", default="cnn", help="backbone of the runs (with --evaluate: the runs' own)")
    p.add_argument(
        "--profile",
        default="quick",
        choices=sorted(BENCH_PROFILES),
        help="two things at once: the training profile of the runs to find or train (--evaluate runs keep "
        "their own) AND the bench's budgets: test points "
        + _per_profile(_adv("n_cheap"))
        + ", PGD steps "
        + _per_profile(lambda prof: prof["adversarial"]["budget"].pgd_steps)
        + ", ID / OOD points "
        + _per_profile(lambda prof: f"{prof['n_id']}/{prof['n_ood']}"),
    )
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")


def _add_sample_options(p: argparse.ArgumentParser) -> None:
    """--thorough and the options that change the bench's point counts (defaults: the --profile's)."""
    p.add_argument(
        "--thorough",
        action="store_true",
        help=f">= {THOROUGH['n_cheap']} points "
        f"({THOROUGH['n_blackbox']} black-box), every seed found in --runs-dir, every attack (FAB-T "
        "included), full ε grids for AutoAttack and the adaptive attack, Square "
        f"{THOROUGH_SQUARE_QUERIES} queries, adaptive "
        f"{THOROUGH['adaptive'].steps} steps x {THOROUGH['adaptive'].restarts} restarts (hours on 2 CPU "
        "cores)",
    )
    p.add_argument(
        "--n-samples",
        type=int,
        help=f"test points for the cheap attacks (default "
        f"{_per_profile(_adv('n_cheap'))}); with it, the expensive attacks use half, the black-box one a "
        "tenth",
    )
    p.add_argument(
        "--n-expensive",
        type=int,
        help="points for the minimum-norm, AutoAttack and adaptive attacks "
        f"(default {_per_profile(_adv('n_expensive'))})",
    )
    p.add_argument(
        "--n-blackbox",
        type=int,
        help=f"points for the black-box HopSkipJump attack (default {_per_profile(_adv('n_blackbox'))})",
    )
    p.add_argument(
        "--n-ood", type=int, help=f"points per OOD set (default {_per_profile(lambda prof: prof['n_ood'])})"
    )
    p.add_argument(
        "--n-id",
        type=int,
        help="ID test points for OOD / misclassification / calibration (default "
        f"{_per_profile(lambda prof: prof['n_id'])})",
    )


def _add_attack_options(p: argparse.ArgumentParser) -> None:
    """The options that change the ε grids, the attacks and their budgets (defaults: the --profile's)."""
    p.add_argument(
        "--eps", help=f"L∞ ε grid, comma-separated (0 is added); default {_grid(DEFAULT_PLAN.eps_linf)}"
    )
    p.add_argument("--eps-l2", help=f"L2 ε grid; default {_grid(DEFAULT_PLAN.eps_l2)}")
    p.add_argument(
        "--attack-steps",
        type=int,
        help="PGD / adaptive steps S (APGD and FAB use 5S, FMN 5S, C&W 2S "
        "per binary-search step); default PGD "
        + _per_profile(lambda prof: prof["adversarial"]["budget"].pgd_steps)
        + ", adaptive "
        + _per_profile(lambda prof: prof["adversarial"]["adaptive"].steps)
        + ", APGD / FAB "
        + _per_profile(lambda prof: prof["adversarial"]["budget"].apgd_steps),
    )
    p.add_argument(
        "--square-queries",
        type=int,
        help="queries of the Square attack per run (default "
        + _per_profile(lambda prof: prof["adversarial"]["budget"].square_queries)
        + f"; --thorough: {THOROUGH_SQUARE_QUERIES})",
    )
    p.add_argument(
        "--attacks",
        help=f"comma-separated subset of: {', '.join(REGISTRY)} (default all but "
        f"{', '.join(a for a in REGISTRY if a not in DEFAULT_PLAN.attacks)}; --thorough: all)",
    )
    p.add_argument(
        "--adaptive-escalations",
        type=int,
        help="at most this many doublings of the adaptive attack's "
        f"steps and restarts in its convergence check (default {DEFAULT_PLAN.adaptive_escalations}; each "
        "costs about 4x the one before)",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Models given directly: finished runs, classifiers trained elsewhere and ONNX graphs."""
    p.add_argument(
        "--run",
        "--evaluate",
        action="append",
        default=[],
        metavar="DIR",
        dest="run",
        help="evaluate this finished run directory as it is (repeatable; replaces --variants/--seeds). "
        "Under torchrun write --evaluate: torchrun reads --run as its own --run-path",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PKG.MODULE:FACTORY",
        help="also bench a classifier trained elsewhere: a factory returning an nn.Module that maps [0, 1] "
        "images to logits (repeatable, one --weights each). Without --run or --variants only these are "
        "benched",
    )
    p.add_argument(
        "--weights", action="append", default=[], metavar="FILE", help="state dict of each --model"
    )
    p.add_argument(
        "--feature-layer",
        action="append",
        default=[],
        metavar="NAME",
        help="module whose output is the --model's feature layer for Mahalanobis / KNN (one per --model "
        "or none; default: the input of the last nn.Linear)",
    )
    p.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="FILE",
        help="also bench a classifier given only as an ONNX graph (float32 [0, 1] images N,C,H,W -> "
        "logits): black-box attacks (Square, HopSkipJump) and OOD detection from its logits, reported as "
        "upper bounds (repeatable). Without --run, --model or --variants only these are benched",
    )
    p.add_argument(
        "--onnx-input-shape",
        metavar="C,H,W",
        help="the --onnx graphs' image shape where the graph "
        "leaves it symbolic (default: read from the graph)",
    )
    p.add_argument(
        "--onnx-output",
        metavar="NAME",
        help="the --onnx graphs' logits output (default: the output named 'logits', else the only output)",
    )


def _add_environment_options(p: argparse.ArgumentParser) -> None:
    """Data directories, device, threads, the bench seed and how the bench behaves."""
    p.add_argument("--data-dir", help="dataset directory (see `python -m training --help`)")
    p.add_argument(
        "--ood-data-dir",
        help="directory with MNIST IDX files for the mnist OOD set "
        "(default: the MNIST test set shipped in data/mnist)",
    )
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument(
        "--seed", type=int, default=0, help="bench seed (sample choice, attack randomness, OOD sets)"
    )
    p.add_argument("--no-train", action="store_true", help="fail instead of training a missing run")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 3 if any sanity flag fails (a model that "
        "could not be measured always gives status 4)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m robustness.bench",
        allow_abbrev=False,
        description="Adversarial robustness, reject option and OOD detection of the four heads.",
        formatter_class=_DefaultsHelp,
    )
    _add_run_options(p)
    _add_sample_options(p)
    _add_attack_options(p)
    p.add_argument("--ood-sets", help=f"comma-separated subset of: {', '.join(ALL_SETS)}")
    p.add_argument("--out", default="bench_out", help="output directory (results.json, report.md, *.png)")
    p.add_argument("--runs-dir", default="runs", help="where cached training runs live (and new ones go)")
    _add_model_options(p)
    _add_environment_options(p)
    return p


def _plan(args: argparse.Namespace, prof: dict) -> AdversarialPlan:
    kw = dict(prof["adversarial"])
    if args.thorough:
        kw.update(THOROUGH)
        kw["budget"] = replace(kw["budget"], square_queries=THOROUGH_SQUARE_QUERIES)
    if args.attack_steps:
        s = args.attack_steps
        kw["budget"] = replace(
            kw["budget"], pgd_steps=s, fmn_steps=5 * s, cw_steps=2 * s, apgd_steps=5 * s, fab_steps=5 * s
        )
        kw["adaptive"] = replace(kw.get("adaptive", AdaptiveBudget()), steps=s)
    if args.square_queries is not None:
        if args.square_queries < 1:
            raise ValueError(f"--square-queries must be >= 1, got {args.square_queries}")
        kw["budget"] = replace(kw["budget"], square_queries=args.square_queries)
    if args.n_samples:
        kw.update(
            n_cheap=args.n_samples,
            n_expensive=max(1, args.n_samples // 2),
            n_blackbox=max(1, args.n_samples // 10),
        )
    if args.n_expensive:
        kw["n_expensive"] = args.n_expensive
    if args.n_blackbox:
        kw["n_blackbox"] = args.n_blackbox
    if args.adaptive_escalations is not None:
        if args.adaptive_escalations < 1:
            raise ValueError(f"--adaptive-escalations must be >= 1, got {args.adaptive_escalations}")
        kw["adaptive_escalations"] = args.adaptive_escalations
    plan = AdversarialPlan(**kw)
    plan.eps_linf = parse_floats(args.eps) or plan.eps_linf
    plan.eps_l2 = parse_floats(args.eps_l2) or plan.eps_l2
    if args.attacks:
        plan.attacks = tuple(names_among(args.attacks, tuple(REGISTRY), "attacks"))
    plan.headline_linf = min(plan.eps_linf, key=lambda e: abs(e - plan.headline_linf))
    plan.headline_l2 = min(plan.eps_l2, key=lambda e: abs(e - plan.headline_l2))
    return plan


def _check_model_options(args: argparse.Namespace) -> None:
    """One --weights per --model, and one --feature-layer per --model or none (ValueError)."""
    if len(args.weights) != len(args.model):
        raise ValueError(
            f"expected one --weights per --model, got {len(args.model)} --model and "
            f"{len(args.weights)} --weights"
        )
    if args.feature_layer and len(args.feature_layer) != len(args.model):
        raise ValueError(
            f"expected one --feature-layer per --model or none, got {len(args.feature_layer)} for "
            f"{len(args.model)} --model"
        )


def _variants(args: argparse.Namespace, argv: Sequence[str] | None) -> tuple[str, ...]:
    """The --variants, none when only --model / --onnx are benched and --variants was not given."""
    explicit_variants = any(a == "--variants" or a.startswith("--variants=") for a in argv or [])
    only_outside = (args.model or args.onnx) and not args.run and not explicit_variants
    return () if only_outside else tuple(names_among(args.variants, VARIANTS, "variants"))


def config_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> BenchConfig:
    """The :class:`BenchConfig` of a parsed command line (``argv``: the command line itself, recorded in results.json).

    >>> argv = ["--variants", "bin_enc,no_pen", "--n-samples", "60", "--attacks", "fgsm,pgd_linf"]
    >>> cfg = config_from_args(build_parser().parse_args(argv), argv)
    >>> cfg.variants, cfg.profile, cfg.n_id
    (('bin_enc', 'no_pen'), 'quick', 2000)
    >>> plan = cfg.adversarial
    >>> plan.attacks, (plan.n_cheap, plan.n_expensive, plan.n_blackbox), plan.budget.pgd_steps
    (('fgsm', 'pgd_linf'), (60, 30, 6), 20)
    >>> cfg.command
    'python -m robustness.bench --variants bin_enc,no_pen --n-samples 60 --attacks fgsm,pgd_linf'
    >>> config_from_args(build_parser().parse_args(["--variants", "bin_enc,nope"]))
    Traceback (most recent call last):
    ...
    ValueError: unknown variants ['nope']; expected some of bin_enc, lin_pen, nonlin_pen, no_pen
    """
    prof = BENCH_PROFILES[args.profile]
    ood_sets = tuple(names_among(args.ood_sets or "", ALL_SETS, "OOD sets") or ALL_SETS)
    _check_model_options(args)
    variants = _variants(args, argv)
    return BenchConfig(
        dataset=args.dataset,
        backbone=args.backbone,
        profile=args.profile,
        variants=variants,
        seeds=tuple(int(s) for s in parse_names(args.seeds)),
        all_seeds=args.thorough,
        thorough=args.thorough,
        runs=tuple(args.run),
        models=tuple(args.model),
        weights=tuple(args.weights),
        feature_layers=tuple(args.feature_layer) or ("",) * len(args.model),
        onnx=tuple(args.onnx),
        onnx_input_shape=parse_shape(args.onnx_input_shape),
        onnx_output=args.onnx_output,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir,
        ood_data_dir=args.ood_data_dir,
        out=args.out,
        device=args.device or "cpu",
        threads=args.threads,
        seed=args.seed,
        n_id=args.n_id or prof["n_id"],
        n_ood=args.n_ood or prof["n_ood"],
        n_fit=prof["n_fit"],
        ood_sets=ood_sets,
        train_missing=not args.no_train,
        adversarial=_plan(args, prof),
        progress=not args.quiet,
        command=" ".join(["python -m robustness.bench", *(relative_path(a) for a in argv or [])]),
    )
