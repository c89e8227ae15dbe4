"""clean_json's policy for values JSON cannot hold, and atomic JSON writes."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from training.jsonio import clean_json, dumps_json, write_json_atomic


def test_clean_json_policy():
    obj = {1: (np.float32(0.5), float("nan"), float("inf"), -np.inf), "a": np.arange(3), "b": np.int64(7)}
    assert clean_json(obj) == {"1": [0.5, None, "inf", "-inf"], "a": [0, 1, 2], "b": 7}
    assert json.loads(dumps_json({"x": float("nan")})) == {"x": None}


def test_write_json_atomic(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "sub" / "r.json", {"b": 1, "a": [np.float64(2.0)]})
    assert json.loads(path.read_text()) == {"a": [2.0], "b": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # A failing write leaves the old file and no temporary file behind.
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"new": True})
    assert json.loads(path.read_text()) == {"a": [2.0], "b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
