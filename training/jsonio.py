"""JSON output: one policy for values JSON cannot hold, and atomic writes.

Policy (:func:`clean_json`): NaN -> ``null``; +inf / -inf -> the strings ``"inf"`` / ``"-inf"``; numpy scalars and
arrays -> Python numbers and lists; tuples -> lists; dict keys -> strings. Files are written by
:func:`serving.atomic_write.atomic_write_bytes` (temp file in the same directory, fsync, ``os.replace``, mode 0644), so a
reader sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from serving.atomic_write import atomic_write_bytes


def clean_json(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts (see the module's policy)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def dumps_json(obj: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """``clean_json(obj)`` as JSON text with a trailing newline."""
    return json.dumps(clean_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Write ``clean_json(obj)`` to ``path`` atomically (mode 0644); returns the path."""
    path = Path(path)
    atomic_write_bytes(path, dumps_json(obj, indent, sort_keys).encode())
    return path
