"""The decision-based attack: HopSkipJump against a numpy ``pixels -> logits`` function (the exported ONNX graph).

:class:`QueryCountingModel` wraps the function as a Foolbox model and counts the queries; :func:`starting_points`
gives each point an adversarial to start from.
"""

from __future__ import annotations

from collections.abc import Callable

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch

from robustness.attacks.spec import AttackBudget


class QueryCountingModel(fb.Model):
    """A Foolbox model over a numpy ``pixels (N,C,H,W) float32 -> logits (N,K)`` function; counts queries.

    Works with torch or numpy inputs (the output has the input's tensor type), so decision-based attacks can run
    against an ONNX Runtime session without any gradient.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], bounds: tuple[float, float] = (0.0, 1.0)):
        self._predict = predict
        self._bounds = fb.types.Bounds(*bounds)
        self.queries = 0

    @property
    def bounds(self) -> fb.types.Bounds:
        return self._bounds

    def __call__(self, inputs):
        x, restore_type = ep.astensor_(inputs)
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        self.queries += len(arr)
        return restore_type(ep.from_numpy(x, np.asarray(self._predict(arr), dtype=np.float32)))


def hsj_l2(b: AttackBudget) -> fb.Attack:
    return fb.attacks.HopSkipJumpAttack(
        steps=b.hsj_steps,
        initial_gradient_eval_steps=b.hsj_initial_evals,
        max_gradient_eval_steps=b.hsj_max_evals,
        constraint="l2",
    )


def starting_points(fmodel: fb.Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """For each point the nearest (L2) other input of the batch that the model does not label ``y``.

    Decision-based attacks need an adversarial to start from; Foolbox's default (blended uniform noise) fails on
    models that call noise a class, and then HopSkipJump raises for the whole batch. Returns the starting points
    and a mask of the points that have one.
    """
    with torch.no_grad():
        pred = fmodel(x).argmax(1)
    d = torch.cdist(x.flatten(1), x.flatten(1))
    d[pred[None, :] == y[:, None]] = torch.inf  # candidates must not be classified as the point's label
    best = d.argmin(dim=1)
    has = torch.isfinite(d[torch.arange(len(x)), best])
    return x[best].clone(), has.cpu().numpy()
