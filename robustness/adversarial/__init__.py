"""The adversarial part of the bench for one model: attack ensemble, adaptive attack on the reject option, checks.

:func:`evaluate_adversarial` takes a network returning ``(logits, z)`` (or logits), a fixed sample of test points,
an :class:`AdversarialPlan` and the model's reject options, and returns a JSON-ready dict.

* :class:`Sample` holds the fixed sample and its nested tiers (prefixes of the same points): the cheap attacks use
  ``n_cheap`` points, the expensive ones (minimum-norm, AutoAttack components, adaptive attack, probes) the first
  ``n_expensive``, the black-box one the first ``n_blackbox``. Attacks run on the correctly classified points; a
  clean error counts as a failure at every ε.
* Every attack that ran at grid ε values is a :class:`Record` (success per ε and point, and for each reject option
  "misclassified AND accepted"); :func:`worst_case` is the one aggregator: per point ``any`` over the records of a
  norm, with the ε envelope (an adversarial found within a smaller ε counts at every larger ε).
* The AutoAttack components follow AutoAttack's protocol: each runs only on the points every earlier attack left
  unbroken at that ε.

The package: :mod:`~robustness.adversarial.plan` (:class:`AdversarialPlan`), :mod:`~robustness.adversarial.records`
(sample, records, worst case), :mod:`~robustness.adversarial.ensemble` (the attacks),
:mod:`~robustness.adversarial.convergence` (stronger PGD, the adaptive attack and its escalation),
:mod:`~robustness.adversarial.checks` (what the sanity flags read) and :mod:`~robustness.adversarial.evaluation`
(:func:`evaluate_adversarial`, the summary).
"""

from __future__ import annotations

from robustness.adversarial.evaluation import evaluate_adversarial, summarize
from robustness.adversarial.plan import NORMS, AdversarialPlan
from robustness.adversarial.records import Context, Record, Sample, envelope, robust_points, worst_case

__all__ = [
    "NORMS",
    "AdversarialPlan",
    "Context",
    "Record",
    "Sample",
    "envelope",
    "evaluate_adversarial",
    "robust_points",
    "summarize",
    "worst_case",
]
