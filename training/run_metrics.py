"""The finished run's ``metrics.json``: accuracy and latent geometry on every split, computed with the numpy
functions of :mod:`training.geometry` on the latents of :func:`training.inference.forward_batches`."""

from __future__ import annotations

from training.data import DatasetSplits
from training.geometry import collapse_stats, fit_peaks, latent_geometry
from training.inference import forward_batches
from training.models import Classifier


def run_metrics(model: Classifier, data: DatasetSplits, device: str = "cpu") -> dict:
    """Accuracy and latent geometry on the un-augmented train, validation and test splits (``metrics.json``)."""
    out: dict = {"dataset": data.name, "num_classes": data.num_classes, "latent_width": model.latent_width}
    latents = {}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        logits, z = forward_batches(model, split.images, device=device)
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
        {
            "low": p.low,
            "high": p.high,
            "midpoint": p.midpoint,
            "separation": p.separation,
            "bimodal": p.bimodal,
            "weight_low": p.weight_low,
        }
        for p in peaks
    ]
    out["bimodal_dims"] = int(sum(p.bimodal for p in peaks))
    out["all_dims_bimodal"] = bool(all(p.bimodal for p in peaks))
    for name, (z, pred, y) in latents.items():
        out[name] = latent_geometry(z, pred, y, data.num_classes, peaks)
    return out
