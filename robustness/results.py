"""``results.json``, the bench's versioned results file: its schema, the writer and the one reader,
:func:`load_results` (every tool that reads a bench's results goes through it)."""

from __future__ import annotations

import json
from pathlib import Path

from training.jsonio import write_json_atomic

SCHEMA = {"name": "binenc.robustness.results", "version": 2}


def write_results(results: dict, out: Path) -> Path:
    return write_json_atomic(Path(out) / "results.json", results, indent=1, sort_keys=False)


def load_results(path: str | Path) -> dict:
    """The results of ``path`` after checking their schema (ValueError: not JSON, or not this schema's)."""
    data = json.loads(Path(path).read_text())
    schema = data.get("schema", {}) if isinstance(data, dict) else None
    if (
        not isinstance(schema, dict)
        or schema.get("name") != SCHEMA["name"]
        or schema.get("version") != SCHEMA["version"]
    ):
        raise ValueError(f"{path}: expected schema {SCHEMA}, got {schema}")
    return data
