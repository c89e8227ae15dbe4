"""What an attack is: the literal types of the registry, :class:`AttackBudget` and :class:`AttackSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

Norm = Literal["linf", "l2"]
Kind = Literal["fixed", "min_norm"]
Access = Literal["white", "black"]
Tier = Literal["cheap", "expensive", "blackbox"]
Library = Literal["foolbox", "torchattacks"]


@dataclass(frozen=True)
class AttackBudget:
    """Iteration budgets of the attacks (the sample counts live in the bench plan)."""

    pgd_steps: int = 20
    pgd_restarts: int = 1
    deepfool_steps: int = 50
    deepfool_candidates: int = 10
    cw_binary_steps: int = 4
    cw_steps: int = 25
    cw_stepsize: float = 0.05
    cw_initial_const: float = 0.1
    fmn_steps: int = 50
    fmn_l2_max_stepsize: float = 0.1  # Foolbox's default 1.0 stalls at ~2x DeepFool's norm on (Fashion-)MNIST
    hsj_steps: int = 12
    hsj_initial_evals: int = 50
    hsj_max_evals: int = 200
    apgd_steps: int = 100  # AutoAttack's standard budget
    apgd_restarts: int = 1
    fab_steps: int = 100
    square_queries: int = 5000

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: how to build it from a budget and how to read its result.

    ``library="torchattacks"`` attacks are built per ε as ``build(budget, logits_net, norm, eps, n_classes,
    seed)``; ``residual`` attacks follow the AutoAttack protocol (they run only on the points that every earlier
    attack of the ensemble left unbroken at that ε).
    """

    name: str
    norm: Norm
    kind: Kind
    access: Access
    iterative: bool
    tier: Tier
    build: Callable = field(repr=False)
    description: str = ""
    library: Library = "foolbox"
    residual: bool = False
