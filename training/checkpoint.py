"""Atomic file writes and run-directory checkpoints that can rebuild the model."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.models import Classifier, ModelConfig, build_model

CHECKPOINT = "checkpoint.pt"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync and ``os.replace`` (mode 0644,
    as ``serving.artifact.atomic_write_bytes``): readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically (serialised in memory, then :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(run_dir: str | Path, map_location: str = "cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first with `python -m training --out {run_dir}`")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[Classifier, TrainConfig, dict]:
    """Rebuild the trained model (eval mode) from a run directory; returns ``(model, train_cfg, checkpoint)``."""
    ckpt = load_checkpoint(run_dir, map_location)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, TrainConfig.from_dict(ckpt["train_config"]), ckpt
