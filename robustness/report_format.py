"""Cell formatting and the markdown table shared by report.md's sections."""

from __future__ import annotations

import math
from pathlib import Path


def pct(v, digits: int = 1) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.{digits}f}"


def num(v, fmt: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "–"
    return format(v, fmt)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def ci(d: dict | None) -> str:
    """``12.0 [6.4, 20.8]`` for a proportion with its 95% interval (percent)."""
    if not d or d.get("value") is None:
        return "–"
    return f"{pct(d['value'])} [{pct(d['ci95'][0])}, {pct(d['ci95'][1])}]"


def artifact_name(path: str) -> str:
    """``RUN/model.onnx``: the run directory's name and the file, never a machine path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"
