"""The plan of one model's adversarial evaluation: ε grids, attacks, sample tiers, budgets, headline ε."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from robustness import sanity
from robustness.adaptive import AdaptiveBudget
from robustness.attacks import DEFAULT_ATTACKS, AttackBudget, Norm

NORMS: tuple[Norm, ...] = ("linf", "l2")


@dataclass
class AdversarialPlan:
    eps_linf: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    n_cheap: int = 200
    n_expensive: int = 100
    n_blackbox: int = 20
    budget: AttackBudget = field(default_factory=AttackBudget)
    adaptive: AdaptiveBudget = field(default_factory=AdaptiveBudget)
    adaptive_eps_linf: tuple[float, ...] = (0.02, 0.05, 0.1)  # () = the whole grid
    adaptive_eps_l2: tuple[float, ...] = (1.0,)
    ensemble_eps_linf: tuple[float, ...] = (0.05, 0.1)  # where the AutoAttack components run; () = whole grid
    ensemble_eps_l2: tuple[float, ...] = (1.0,)
    large_eps_linf: float = 0.5
    large_eps_l2: float = 10.0
    strong_steps_factor: int = 2
    strong_restarts: int = 2
    adaptive_escalations: int = (
        3  # at most this many doublings of the adaptive budget in its convergence check
    )
    headline_linf: float = 0.05
    headline_l2: float = 1.0
    sanity: sanity.SanityConfig = field(default_factory=sanity.SanityConfig)

    def eps(self, norm: Norm) -> list[float]:
        return [float(e) for e in (self.eps_linf if norm == "linf" else self.eps_l2)]

    def subset(self, norm: Norm, which: tuple[float, ...]) -> list[float]:
        """The grid ε among ``which`` (all positive grid ε when ``which`` is empty)."""
        return [e for e in self.eps(norm) if e > 0 and (not which or any(abs(e - w) < 1e-12 for w in which))]

    def headline(self, norm: Norm) -> float:
        return self.headline_linf if norm == "linf" else self.headline_l2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        return d
