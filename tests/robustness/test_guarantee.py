"""The risk guarantee checked on test: realized selective error and coverage beside the certified bound."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from robustness import evaluate
from robustness import guarantee as G

RISK = {
    "mode": "risk",
    "alpha": 0.05,
    "delta": 0.05,
    "upper_bound_at_threshold": 0.048,
    "calibration_coverage": 0.7,
    "calibration_n": 4000,
}


def test_realized_counts_the_accepted_errors_with_an_exact_interval():
    accepted = np.array([True] * 8 + [False] * 2)
    correct = np.array([True] * 6 + [False, False] + [False, True])
    r = G.realized(RISK, accepted, correct)
    assert (r["n_test"], r["accepted"], r["errors_accepted"]) == (10, 8, 2)
    assert r["coverage"] == 0.8 and r["selective_risk"] == 0.25 and r["risk_at_most_alpha"] is False
    lo, hi = r["selective_risk_ci95"]
    assert lo < 0.25 < hi and hi == pytest.approx(0.6509, abs=1e-3)  # Clopper-Pearson 95% for 2 of 8
    assert r["alpha"] == 0.05 and r["calibration_n"] == 4000
    assert G.realized({"mode": "accept_rate", "target_accept_rate": 0.95}, accepted, correct) is None
    none = G.realized(RISK, np.zeros(4, bool), np.ones(4, bool))
    assert none["accepted"] == 0 and none["selective_risk"] is None and none["selective_risk_ci95"] is None


@pytest.fixture(scope="module")
def risk_run(tmp_path_factory, digits_run, digits_data):
    """A copy of the digits run whose ``model.onnx`` certifies a selective error <= 0.1 at delta 0.1."""
    from training.export import export_run

    run = tmp_path_factory.mktemp("risk") / digits_run.name
    shutil.copytree(digits_run, run)
    export_run(run, run / "model.onnx", data=digits_data, target_risk=0.1, delta=0.1)
    return run


@pytest.mark.slow
def test_cli_measures_the_served_decision_on_the_whole_test_split(risk_run, digits_data, tmp_path, capsys):
    from serving.artifact import load_artifact

    out = tmp_path / "g.json"
    assert G.main([str(risk_run / "model.onnx"), "--json", str(out)]) == 0
    assert "selective error" in capsys.readouterr().out
    r = json.loads(out.read_text())
    art = load_artifact(risk_run / "model.onnx")
    o = art.run(digits_data.test.images.astype(np.float32) / 255)
    acc = o["reliability"] >= art.threshold
    wrong = o["logits"].argmax(1) != digits_data.test.labels
    assert (r["n_test"], r["accepted"], r["errors_accepted"]) == (
        len(acc),
        int(acc.sum()),
        int((acc & wrong).sum()),
    )
    assert r["alpha"] == 0.1 and r["upper_bound_at_threshold"] == art.acceptance["upper_bound_at_threshold"]


def test_cli_refuses_an_artifact_without_a_guarantee(digits_artifact, capsys):
    assert G.main([str(digits_artifact)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--target-risk" in err and "\n" not in err


@pytest.mark.slow
def test_bench_entry_records_the_realized_guarantee(risk_run, digits_data, monkeypatch):
    """The bench's per-model measurement adds ``guarantee`` for an artifact with one (attacks stubbed out here)."""
    import torch

    from robustness.config import BenchConfig
    from robustness.runs import ModelRun
    from training.checkpoint import load_run

    monkeypatch.setattr(evaluate, "evaluate_adversarial", lambda *a, **k: {"seconds": 0.0})
    monkeypatch.setattr(evaluate, "paper_deepfool", lambda *a, **k: {})
    monkeypatch.setattr(evaluate, "ccat_all", lambda *a, **k: {})
    idx = np.arange(200)
    inp = evaluate.Inputs(
        digits_data, torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), [], idx, np.arange(300)
    )
    cfg = BenchConfig(dataset="digits", backbone="mlp")
    entry, arrays = evaluate.evaluate_model(
        cfg, ModelRun("bin_enc_s0", load_run(risk_run)[1], risk_run, "given"), inp
    )
    g = entry["guarantee"]
    accepted = arrays["reliability_id"] >= entry["artifact"]["threshold"]
    assert g["n_test"] == 200 and g["accepted"] == int(accepted.sum())
    assert g["errors_accepted"] == int((accepted & ~arrays["correct"]).sum()) and g["alpha"] == 0.1
