"""Data augmentation of training images: random translations (``TrainConfig.augment_shift``).

The offsets are drawn from the run's seeded generator for the whole global batch, so a data-parallel run shifts
every image as one process would (:func:`training.train.train` draws them, each rank applies its shard's).
"""

from __future__ import annotations

import torch
from torch import nn


def shift_offsets(n: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) random (dy, dx) crop offsets in ``[0, 2 * max_shift]`` for :func:`apply_shifts`."""
    return torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)


def apply_shifts(x: torch.Tensor, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate image i by ``offsets[i] - max_shift`` pixels (zero padding)."""
    _, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding), deterministically for a generator."""
    if max_shift <= 0:
        return x
    return apply_shifts(x, shift_offsets(len(x), max_shift, generator), max_shift)
