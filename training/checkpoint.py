"""Run-directory checkpoints (written atomically) that can rebuild the model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from serving.atomic_write import atomic_write_bytes
from training.config import TrainConfig
from training.models import Classifier, ModelConfig, build_model
from training.rundir import CHECKPOINT


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically (serialised in memory, then :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(run_dir: str | Path, map_location: str = "cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first with `python -m training --out {run_dir}`"
        )
    return torch.load(path, map_location=map_location, weights_only=False)


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[Classifier, TrainConfig, dict]:
    """Rebuild the trained model (eval mode) from a run directory; returns ``(model, train_cfg, checkpoint)``."""
    ckpt = load_checkpoint(run_dir, map_location)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, TrainConfig.from_dict(ckpt["train_config"]), ckpt
