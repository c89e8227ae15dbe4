"""The fair ablation: a Mahalanobis reject option on a model trained without the compression penalty.

``lin_pen`` has the same 8-d linear latent as ``bin_enc`` but no ``gamma·mean(z²)`` term. Giving it the same kind of
reject option — class centres and the tied within-class whitening of its latent
(:class:`training.mahalanobis.TiedGaussian`), reliability ``exp(-sqrt(|(z - c_pred) W|² / d))``, threshold
calibrated on the validation split to accept 95% — and attacking it the same adaptive way separates "binary
encoding" from "a distance-based detector on a narrow latent". The score is :class:`training.score.VertexScore`
over a :class:`training.reliability.VertexGeometry` whose hypercube is the identity map (midpoint 0, half-edge 1,
so ``u = z``): the same torch code that bin_enc's artifact serves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustness.reject_option import RejectOption
from training.calibration import calibrate_threshold
from training.inference import forward_batches
from training.posthoc import latent_mahalanobis_geometry
from training.score import score_module

ABLATION_NAME = "mahalanobis_latent"


def mahalanobis_option(
    net: nn.Module,
    data,
    fit_idx: np.ndarray,
    device: str,
    target_accept_rate: float = 0.95,
) -> RejectOption:
    """The ablation's reject option for ``net`` (fitted on ``data.train[fit_idx]``, calibrated on ``data.val``)."""
    logits, z = forward_batches(net, data.train.images[fit_idx], device=device)
    geo = latent_mahalanobis_geometry(z, logits.argmax(1), data.train.labels[fit_idx], data.num_classes)
    score = score_module(geo).to(device)
    vl, vz = forward_batches(net, data.val.images, device=device)
    with torch.no_grad():
        rel = (
            score(torch.from_numpy(vl).to(device), torch.from_numpy(vz).to(device)).reliability.cpu().numpy()
        )
    return RejectOption(ABLATION_NAME, score, float(calibrate_threshold(rel, target_accept_rate)))
