"""The reject option: a score module and its acceptance threshold, the decision "predict if accepted, else
abstain" that the served graph makes, optionally confirmed by that graph itself (:func:`graph_confirm`).

An attack on it succeeds only on a point that is misclassified AND accepted (:meth:`RejectOption.fooled`); the
adaptive attack (:mod:`robustness.adaptive`) aims at exactly that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustness.attacks import logits_and_z
from serving.artifact import accepts

# served graph: pixels -> (predicted class, accepted) as numpy
Confirm = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def graph_confirm(graph: Callable[[np.ndarray], dict], threshold: float) -> Confirm:
    """The served decision of a graph returning ``logits`` and ``reliability``: (argmax, reliability >= threshold)."""

    def confirm(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = graph(pixels)
        return out["logits"].argmax(1), accepts(out["reliability"], threshold)

    return confirm


@dataclass
class RejectOption:
    """A score module with its acceptance threshold, optionally confirmed by the served graph.

    ``graph``: the served graph itself (pixels -> outputs with ``logits`` and ``reliability``), for checks at
    another threshold (:func:`robustness.ccat.ccat_figures`)."""

    name: str
    score: nn.Module
    threshold: float
    confirm: Confirm | None = None
    graph: Callable[[np.ndarray], dict] | None = None

    @torch.no_grad()
    def fooled(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Per point: misclassified AND accepted by the score module (the served decision, in torch)."""
        out = []
        for i in range(0, len(x), batch_size):
            logits, z = logits_and_z(net, x[i : i + batch_size])
            wrong = logits.argmax(1) != y[i : i + batch_size]
            out.append((wrong & self.score.accepted(logits, z, self.threshold)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, bool)
