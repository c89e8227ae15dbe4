"""Batched inference of a classifier: the one place images become ``(logits, z)`` arrays, and the accuracy and
cross-entropy of a split computed from them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 tensor in [0, 1]."""
    return torch.as_tensor(np.asarray(images, dtype=np.float32)).div_(255.0)


@torch.no_grad()
def forward_batches(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and latents z (N, d) as float32 numpy, ``batch_size`` rows at a time, model in eval mode.

    ``images``: uint8 pixels as a numpy array (scaled by 1/255 here) or a float tensor already in [0, 1]. A model
    that returns logits only gets ``z = logits``.
    """
    model.eval()
    logits, latents = [], []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        x = chunk if isinstance(chunk, torch.Tensor) else to_tensor(chunk)
        out = model(x.to(device))
        lo, z = out if isinstance(out, tuple) else (out, out)
        logits.append(lo.float().cpu().numpy())
        latents.append(z.float().cpu().numpy())
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(latents)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: str = "cpu") -> dict:
    """Accuracy and mean cross-entropy of ``model`` on one split."""
    logits, _ = forward_batches(model, images, device=device)
    lt = torch.from_numpy(logits)
    ce = float(nn.functional.cross_entropy(lt, torch.from_numpy(labels)))
    return {"acc": float((logits.argmax(1) == labels).mean()), "ce": ce}
