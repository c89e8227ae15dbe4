"""Evaluation of a trained model: batched forward pass, accuracy / cross-entropy, and the end-of-run metrics
(accuracy and latent geometry on every split, computed with the numpy functions of :mod:`training.geometry`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.data import DatasetSplits
from training.geometry import collapse_stats, fit_peaks, latent_geometry
from training.models import Classifier


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return torch.as_tensor(np.asarray(images, dtype=np.float32)).div_(255.0)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1024, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Logits and latents (float32 numpy) for uint8 images."""
    model.eval()
    logits, latents = [], []
    for i in range(0, len(images), batch_size):
        lo, z = model(to_tensor(images[i : i + batch_size]).to(device))
        logits.append(lo.float().cpu().numpy())
        latents.append(z.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(latents)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: str = "cpu") -> dict:
    """Accuracy and mean cross-entropy of ``model`` on one split."""
    logits, _ = predict(model, images, device=device)
    lt = torch.from_numpy(logits)
    ce = float(nn.functional.cross_entropy(lt, torch.from_numpy(labels)))
    return {"acc": float((logits.argmax(1) == labels).mean()), "ce": ce}


def run_metrics(model: Classifier, data: DatasetSplits, device: str = "cpu") -> dict:
    """Accuracy and latent geometry on the un-augmented train, validation and test splits (``metrics.json``)."""
    out: dict = {"dataset": data.name, "num_classes": data.num_classes, "latent_width": model.latent_width}
    latents = {}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        logits, z = predict(model, split.images, device=device)
        latents[name] = (z, logits.argmax(1), split.labels)
        out[f"{name}_acc"] = float((logits.argmax(1) == split.labels).mean())
    if model.cfg.variant == "no_pen":
        # The classifier sits directly on the 256-d features: report collapse statistics only.
        for name, (z, _pred, y) in latents.items():
            out[name] = collapse_stats(z, y, data.num_classes)
        return out
    z_tr = latents["train"][0]
    peaks = [fit_peaks(z_tr[:, j], seed=j) for j in range(z_tr.shape[1])]
    out["dimensions"] = [
        {"low": p.low, "high": p.high, "midpoint": p.midpoint, "separation": p.separation, "bimodal": p.bimodal,
         "weight_low": p.weight_low}
        for p in peaks
    ]
    out["bimodal_dims"] = int(sum(p.bimodal for p in peaks))
    out["all_dims_bimodal"] = bool(all(p.bimodal for p in peaks))
    for name, (z, pred, y) in latents.items():
        out[name] = latent_geometry(z, pred, y, data.num_classes, peaks)
    return out
