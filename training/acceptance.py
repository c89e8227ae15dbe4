"""The artifact's threshold, chosen on the reliabilities the exported graph produces on the validation split: the
threshold that accepts a target share of it, or the most permissive one whose selective error is certified
(:mod:`training.selective_risk`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.calibration import calibrate_threshold, calibration_summary
from training.selective_risk import (
    RiskNotCertifiable,
    certify,
    choose_alpha,
    risk_summary,
    sequence_start,
    split_validation,
)


def risk_controlled_threshold(
    val_out: dict[str, np.ndarray],
    labels: np.ndarray,
    alpha: float | Sequence[float],
    delta: float,
    candidates: int,
) -> tuple[float, dict, dict]:
    """``(threshold, acceptance, calibration summary)`` of the most permissive threshold certified at ``alpha``
    (:func:`training.selective_risk.certify` at ``delta / candidates``); raises :class:`RiskNotCertifiable`.
    Several ``alpha``: the smallest at or above the selection part's smallest certifiable risk
    (:func:`training.selective_risk.choose_alpha`; the calibration points play no part in the choice)."""
    sel, cal = split_validation(len(labels))
    rel = val_out["reliability"]
    wrong = val_out["logits"].argmax(1) != labels
    alphas = sorted(alpha) if isinstance(alpha, Sequence) else [float(alpha)]
    if len(alphas) > 1:
        alpha = choose_alpha(alphas, sequence_start(rel[sel], wrong[sel], delta / candidates)[2])
    else:
        alpha = alphas[0]
    cert = certify(rel[sel], wrong[sel], rel[cal], wrong[cal], alpha, delta / candidates)
    if cert.index is None:
        smallest = math.ceil(cert.smallest_certifiable * 1e4) / 1e4
        by = f", Bonferroni over {candidates} candidate models" if candidates > 1 else ""
        raise RiskNotCertifiable(
            f"no threshold certifies a selective error <= {alpha:g} with probability >= {1 - delta:g} on "
            f"{len(cal)} calibration points{by}; the smallest certifiable risk is {smallest:.4f} "
            f"(pass --target-risk {smallest:.4f} or more)"
        )
    acceptance = risk_summary(cert, alpha, delta, candidates, len(sel))
    if len(alphas) > 1:
        acceptance["alpha_candidates"] = alphas
        acceptance["alpha_rule"] = (
            "the smallest candidate at or above the selection part's smallest certifiable "
            "risk (chosen without the calibration points)"
        )
    calibration = calibration_summary(
        {k: v[cal] for k, v in val_out.items()}, labels[cal], cert.threshold, split="val (calibration part)"
    )
    return cert.threshold, acceptance, calibration


def choose_threshold(
    val_out: dict[str, np.ndarray],
    labels: np.ndarray,
    target_accept_rate: float,
    target_risk: float | Sequence[float] | None,
    delta: float,
    candidates: int,
) -> tuple[float, dict, dict]:
    """``(threshold, acceptance, calibration summary)`` on the validation outputs of the graph: the threshold
    accepting ``target_accept_rate`` of them, or with ``target_risk`` :func:`risk_controlled_threshold`'s."""
    if target_risk is not None:
        return risk_controlled_threshold(val_out, labels, target_risk, delta, candidates)
    threshold = calibrate_threshold(val_out["reliability"], target_accept_rate)
    calibration = calibration_summary(val_out, labels, threshold)
    calibration["target_accept_rate"] = target_accept_rate
    return threshold, {"mode": "accept_rate", "target_accept_rate": target_accept_rate}, calibration


def check_acceptance_args(
    target_accept_rate: float, target_risk: float | Sequence[float] | None, delta: float, candidates: int
) -> None:
    """Refuse acceptance settings outside their ranges (``ValueError``, before anything is loaded)."""
    if not 0.0 < target_accept_rate < 1.0:
        raise ValueError(f"target_accept_rate must be in (0, 1), got {target_accept_rate}")
    risks = list(target_risk) if isinstance(target_risk, Sequence) else [target_risk]
    if target_risk is not None and not (risks and all(0.0 < a < 1.0 for a in risks) and 0.0 < delta < 1.0):
        raise ValueError(f"expected --target-risk and --delta in (0, 1), got {target_risk} and {delta}")
    if not (isinstance(candidates, int) and candidates >= 1):
        raise ValueError(f"expected --candidates to be a whole number >= 1, got {candidates}")
