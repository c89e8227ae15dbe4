"""Typed attack registry: every attack is called the same way and returns success masks shaped (len(eps), N).

``run_attack(spec, model, x, y, epsilons, budget, seed)`` runs one registered attack on correctly classified
points ``x`` (float32 NCHW in [0, 1], torch) with labels ``y`` (int64) and returns an :class:`AttackOutcome`:

* ``success[k, i]`` — the attack found an adversarial for point ``i`` within ``epsilons[k]`` (the returned input is
  clipped to the ε-ball and the box and re-checked);
* ``advs[k]`` — those inputs (the reject option asks whether the score module accepts them);
* ``min_norm[i]`` — for minimum-norm attacks, the norm of the unclipped adversarial (``inf`` if none was found).

Two libraries serve the attacks. Foolbox 3.3.4 gives FGSM / PGD (subclassed: stable losses of
:mod:`robustness.attack_losses`, per-point early stop), DeepFool (subclassed for speed, same result), C&W, FMN and the
decision-based HopSkipJump (against the exported ONNX graph through :class:`QueryCountingModel`). torchattacks
3.5.1 (a port of Croce & Hein's AutoAttack code) gives the AutoAttack components: APGD-CE (its CE replaced by the
stable form), APGD-T (targeted DLR, all K−1 targets), FAB-T (all K−1 targets) and Square. Fixed-ε attacks are
rerun independently at every ε; minimum-norm attacks run once and are clipped per ε.

The package, by family: :mod:`~robustness.attacks.spec` (the budget and what an attack is),
:mod:`~robustness.attacks.gradient` (Foolbox gradient attacks), :mod:`~robustness.attacks.autoattack` (the AutoAttack
components), :mod:`~robustness.attacks.blackbox` (HopSkipJump on the ONNX graph), :mod:`~robustness.attacks.registry`
(the attacks by name), :mod:`~robustness.attacks.white_box` (the logits-only network and the Foolbox model),
:mod:`~robustness.attacks.run` (:func:`run_attack`) and :mod:`~robustness.attacks.diagnostics` (input-gradient norms).
"""

from __future__ import annotations

from robustness.attacks.autoattack import StableAPGDCE
from robustness.attacks.blackbox import QueryCountingModel, starting_points
from robustness.attacks.diagnostics import input_gradient_norms
from robustness.attacks.gradient import L2PGD, L2DeepFool, LinfDeepFool, LinfPGD, MarginL2PGD, MarginLinfPGD
from robustness.attacks.registry import ALL_ATTACKS, DEFAULT_ATTACKS, REGISTRY, get_spec, register
from robustness.attacks.run import AttackOutcome, lp_norms, run_attack, seed_everything
from robustness.attacks.spec import Access, AttackBudget, AttackSpec, Kind, Library, Norm, Tier
from robustness.attacks.white_box import LogitsOf, WhiteBox, logits_and_z, white_box

__all__ = [
    "ALL_ATTACKS",
    "DEFAULT_ATTACKS",
    "REGISTRY",
    "Access",
    "AttackBudget",
    "AttackOutcome",
    "AttackSpec",
    "Kind",
    "L2DeepFool",
    "L2PGD",
    "Library",
    "LinfDeepFool",
    "LinfPGD",
    "LogitsOf",
    "MarginL2PGD",
    "MarginLinfPGD",
    "Norm",
    "QueryCountingModel",
    "StableAPGDCE",
    "Tier",
    "WhiteBox",
    "get_spec",
    "input_gradient_norms",
    "logits_and_z",
    "lp_norms",
    "register",
    "run_attack",
    "seed_everything",
    "starting_points",
    "white_box",
]
