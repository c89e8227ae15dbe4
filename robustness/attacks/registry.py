"""The attack registry: every attack the bench can run, by name (:func:`get_spec`), and the default ensemble."""

from __future__ import annotations

from robustness.attacks.autoattack import apgd_ce, apgd_t, fab_t, square
from robustness.attacks.blackbox import hsj_l2
from robustness.attacks.gradient import (
    L2PGD,
    LinfPGD,
    MarginL2PGD,
    MarginLinfPGD,
    cw_l2,
    deepfool_l2,
    deepfool_linf,
    fgsm,
    fmn_l2,
    fmn_linf,
    pgd,
)
from robustness.attacks.spec import AttackSpec

REGISTRY: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"attack {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


for _spec in (
    AttackSpec(
        "fgsm", "linf", "fixed", "white", False, "cheap", fgsm, "FGSM (single step, log of the stable CE)"
    ),
    AttackSpec(
        "pgd_linf", "linf", "fixed", "white", True, "cheap", pgd(LinfPGD), "L∞ PGD, log CE, random start"
    ),
    AttackSpec(
        "pgd_linf_margin",
        "linf",
        "fixed",
        "white",
        True,
        "cheap",
        pgd(MarginLinfPGD),
        "L∞ PGD, logit-margin (C&W) loss, random start",
    ),
    AttackSpec("pgd_l2", "l2", "fixed", "white", True, "cheap", pgd(L2PGD), "L2 PGD, log CE, random start"),
    AttackSpec(
        "pgd_l2_margin",
        "l2",
        "fixed",
        "white",
        True,
        "cheap",
        pgd(MarginL2PGD),
        "L2 PGD, logit-margin loss, random start",
    ),
    AttackSpec(
        "deepfool_l2", "l2", "min_norm", "white", True, "expensive", deepfool_l2, "L2 DeepFool (logits)"
    ),
    AttackSpec(
        "deepfool_linf", "linf", "min_norm", "white", True, "expensive", deepfool_linf, "L∞ DeepFool (logits)"
    ),
    AttackSpec(
        "cw_l2", "l2", "min_norm", "white", True, "expensive", cw_l2, "L2 Carlini-Wagner, bounded budget"
    ),
    AttackSpec("fmn_l2", "l2", "min_norm", "white", True, "expensive", fmn_l2, "L2 fast minimum-norm"),
    AttackSpec("fmn_linf", "linf", "min_norm", "white", True, "expensive", fmn_linf, "L∞ fast minimum-norm"),
    AttackSpec(
        "hsj_l2",
        "l2",
        "min_norm",
        "black",
        True,
        "blackbox",
        hsj_l2,
        "HopSkipJump (decision-based, L2) against the exported ONNX graph",
    ),
):
    register(_spec)

for _norm in ("linf", "l2"):
    _title = "L∞" if _norm == "linf" else "L2"
    for _name, _build, _desc in (
        ("apgd_ce", apgd_ce, "APGD-CE (log CE)"),
        ("apgd_t", apgd_t, "APGD-T (targeted DLR, all K−1 targets)"),
        ("fab_t", fab_t, "FAB-T (all K−1 targets)"),
        ("square", square, "Square (score-based, margin loss)"),
    ):
        register(
            AttackSpec(
                f"{_name}_{_norm}",
                _norm,
                "fixed",
                "white",
                True,
                "expensive",
                _build,
                f"{_title} {_desc}, torchattacks",
                library="torchattacks",
                residual=True,
            )
        )

ALL_ATTACKS = tuple(REGISTRY)
# The default mode leaves out FAB-T (the costliest AutoAttack component on 2 CPU cores; in AutoAttack's own runs it
# rarely breaks a point APGD-T left); --thorough runs every registered attack.
DEFAULT_ATTACKS = tuple(name for name in REGISTRY if not name.startswith("fab_t"))


def get_spec(name: str) -> AttackSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
