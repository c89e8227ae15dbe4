"""ONNX export: self-contained graph, parity with the Python reference, calibration, atomicity, registration."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from serving.artifact import load_artifact
from serving.artifact_format import ANNEX_KEY, METADATA_KEY, OUTPUT_NAMES, SCHEMA_VERSION, read_metadata
from training import export as export_mod
from training import onnx_graph
from training.checkpoint import load_run
from training.reliability import VertexGeometry
from training.score import VertexScore, score_definition

pytestmark = pytest.mark.slow


def _reference(run_dir, metadata, x: np.ndarray) -> tuple[dict, np.ndarray]:
    """Python reference: the PyTorch model's (logits, z) scored by VertexGeometry rebuilt from the metadata."""
    import torch

    model, _, _ = load_run(run_dir)
    with torch.no_grad():
        logits, z = model(torch.from_numpy(x))
    logits, z = logits.numpy(), z.numpy()
    geo = VertexGeometry.from_metadata(metadata)
    return {"logits": logits, "z": z, **geo.score(z, logits)}, geo.scaled(z)


def test_artifact_carries_no_source_paths(digits_artifact):
    raw = digits_artifact.read_bytes()
    assert str(Path(__file__).resolve().parents[2]).encode() not in raw
    model = onnx.load(str(digits_artifact), load_external_data=False)
    assert not [
        p for n in model.graph.node for p in n.metadata_props if p.key == "pkg.torch.onnx.stack_trace"
    ]


def test_artifact_is_self_contained_with_dynamic_batch(digits_artifact):
    assert sorted(p.name for p in digits_artifact.parent.iterdir() if "onnx" in p.name) == ["model.onnx"]
    model = onnx.load(str(digits_artifact), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert tuple(o.name for o in model.graph.output) == OUTPUT_NAMES
    props = {p.key for p in model.metadata_props}
    assert METADATA_KEY in props and ANNEX_KEY not in props
    # the geometry is constant in the graph, its initializers named after the score module's buffers
    names = {i.name for i in model.graph.initializer}
    assert {"score.midpoint", "score.half_edge", "score.whiten"} <= names
    assert not names & {"t", "a", "threshold"}


def test_metadata_contract(digits_artifact):
    md, annex = read_metadata(digits_artifact)
    assert annex == {}
    assert md["schema_version"] == SCHEMA_VERSION
    assert md["classes"] == [str(i) for i in range(10)]
    assert md["input"] == {
        "shape": [1, 8, 8],
        "layout": "NCHW",
        "dtype": "float32",
        "pixel_range": [0, 1],
        "normalisation": {
            "mean": md["input"]["normalisation"]["mean"],
            "std": md["input"]["normalisation"]["std"],
            "applied_in_graph": True,
        },
    }
    assert md["variant"] == "bin_enc" and md["dataset"] == "digits" and md["backbone"] == "mlp"
    assert md["latent_dim"] == 8
    assert md["score"]["name"] == "vertex_distance" and md["score"]["direction"] == "higher = more reliable"
    assert md["score"]["definition"] == score_definition(VertexScore(VertexGeometry.from_metadata(md)))
    assert 0 < md["threshold"] <= 1 and md["target_accept_rate"] == 0.95
    assert set(md["geometry"]) >= {"low", "high", "midpoint", "half_edge"}
    assert all(len(md["geometry"][k]) == 8 for k in ("low", "high", "midpoint", "half_edge"))
    assert len(set(md["codebook"].values())) == 10 and all(len(c) == 8 for c in md["codebook"].values())
    assert "val_acc" in md["training_metrics"]
    cal = md["calibration"]
    assert cal["split"] == "val" and cal["n"] >= 256
    assert 0.95 <= cal["accept_rate"] <= 0.95 + 1.5 / cal["n"]
    assert cal["parity"]["samples"] >= 256 and cal["parity"]["argmax_mismatches"] == 0
    assert md["created_at"] and md["code_version"] and md["checksum"].startswith("sha256:")


def test_graph_equals_the_torch_score_module(digits_run, digits_artifact, digits_data):
    import torch

    art = load_artifact(digits_artifact)
    model, _, _ = load_run(digits_run)
    scored = onnx_graph.ScoredModel(model, VertexGeometry.from_metadata(art.metadata)).eval()
    x = digits_data.val.images.astype(np.float32) / 255
    got = art.run(x)
    with torch.no_grad():
        eager = dict(zip(OUTPUT_NAMES, (v.numpy() for v in scored(torch.from_numpy(x))), strict=True))
    np.testing.assert_array_equal(got["nearest_vertex_class"], eager["nearest_vertex_class"])
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], eager[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_ensure_artifact_exports_only_when_needed(digits_run, digits_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "metrics.json"):
        shutil.copy(digits_run / name, run / name)
    path, exported = export_mod.ensure_artifact(run, digits_data)
    assert exported and path == run / "model.onnx" and path.is_file()
    assert export_mod.ensure_artifact(run, digits_data) == (path, False)
    # Mark the artifact with an mtime far in the future (so it is not stale): only a real write clears the mark.
    # (Comparing checksums is not enough: created_at has one-second resolution.)
    mark = int((run / "checkpoint.pt").stat().st_mtime) + 10_000
    os.utime(path, (mark, mark))
    assert export_mod.ensure_artifact(run, digits_data) == (path, False)
    assert path.stat().st_mtime == mark
    assert export_mod.ensure_artifact(run, digits_data, reexport=True) == (path, True)
    assert path.stat().st_mtime < mark  # written again
    assert read_metadata(path)[0]["classes"] == digits_data.classes


def test_graph_reproduces_python_reliability_on_random_inputs(digits_run, digits_artifact):
    art = load_artifact(digits_artifact)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((200, 1, 8, 8)), rng.random((100, 1, 8, 8)) ** 4]).astype(np.float32)
    got = art.run(x)
    ref, u = _reference(digits_run, art.metadata, x)
    np.testing.assert_array_equal(got["logits"].argmax(1), ref["logits"].argmax(1))
    for name in (
        "logits",
        "probs",
        "z",
        "dist_nearest_vertex",
        "dist_predicted_vertex",
        "dist_class_centre",
        "reliability",
    ):
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5, rtol=1e-5, err_msg=name)
    clear = np.abs(u).min(axis=1) > 1e-4  # a sign flip of a coordinate on the threshold may change the vertex
    np.testing.assert_array_equal(got["nearest_vertex_class"][clear], ref["nearest_vertex_class"][clear])
    assert got["nearest_vertex_class"].dtype == np.int64
    assert np.all((got["reliability"] >= 0) & (got["reliability"] <= 1))


def test_calibration_on_validation_split(digits_artifact, digits_data):
    art = load_artifact(digits_artifact)
    out = art.run(digits_data.val.images.astype(np.float32) / 255)
    accepted, _ = art.decide(out)
    assert accepted.mean() == pytest.approx(art.metadata["calibration"]["accept_rate"])
    assert 0.95 <= accepted.mean() <= 0.95 + 1.5 / len(accepted)


def test_baseline_uses_max_softmax(digits_baseline_artifact, digits_data):
    art = load_artifact(digits_baseline_artifact)
    assert art.score_name == "max_softmax" and art.variant == "no_pen"
    assert art.metadata["geometry"] is None and art.metadata["codebook"] == {}
    out = art.run(digits_data.test.images[:300].astype(np.float32) / 255)
    np.testing.assert_allclose(out["reliability"], out["probs"].max(1), atol=1e-6)
    np.testing.assert_array_equal(out["nearest_vertex_class"], out["logits"].argmax(1))
    np.testing.assert_allclose(out["dist_predicted_vertex"], 1 - out["reliability"], atol=1e-6)
    assert out["z"].shape == (300, 256)


def _no_leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".") or "onnx" in p.name]


def test_failed_parity_check_leaves_nothing(digits_run, digits_data, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise export_mod.ParityError("simulated parity failure")

    monkeypatch.setattr(onnx_graph, "check_parity", boom)
    with pytest.raises(export_mod.ParityError, match="simulated"):
        export_mod.export_run(digits_run, tmp_path / "model.onnx", data=digits_data)
    assert _no_leftovers(tmp_path) == []


def test_real_parity_mismatch_is_detected(digits_run, digits_data, tmp_path, monkeypatch):
    real = onnx_graph.ort_outputs

    def skewed(*args, **kwargs):
        out = real(*args, **kwargs)
        out["reliability"] = out["reliability"] * 1.01  # 1%: ten times the relative tolerance
        return out

    monkeypatch.setattr(onnx_graph, "ort_outputs", skewed)
    with pytest.raises(export_mod.ParityError, match=r"max \|reliability diff\|"):
        export_mod.export_run(digits_run, tmp_path / "model.onnx", data=digits_data)
    assert _no_leftovers(tmp_path) == []


def test_interrupted_write_leaves_nothing(digits_run, digits_data, tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_mod.export_run(digits_run, tmp_path / "model.onnx", data=digits_data)
    monkeypatch.undo()
    assert _no_leftovers(tmp_path) == []


def test_bad_target_accept_rate(digits_run):
    with pytest.raises(ValueError, match="target_accept_rate"):
        export_mod.export_run(digits_run, target_accept_rate=1.5)


def test_cli_export_and_register(digits_run, tmp_path, bentoml_home, capsys):
    import bentoml

    out = tmp_path / "exported.onnx"
    rc = export_mod.main([str(digits_run), "--out", str(out), "--register", "--target-accept-rate", "0.9"])
    assert rc == 0
    assert "exported" in capsys.readouterr().out
    md, _ = read_metadata(out)
    assert md["target_accept_rate"] == 0.9
    assert 0.9 <= md["calibration"]["accept_rate"] <= 0.9 + 1.5 / md["calibration"]["n"]
    assert os.environ["BENTOML_HOME"] == str(bentoml_home)
    m = bentoml.models.get("binenc:latest")
    assert m.info.labels["dataset"] == "digits" and m.info.labels["variant"] == "bin_enc"
    assert m.info.metadata["checksum"] == md["checksum"]
    stored = load_artifact(m.path_of("model.onnx"))
    assert stored.metadata["checksum"] == md["checksum"]


def test_cli_reports_missing_run(tmp_path, capsys):
    assert export_mod.main([str(tmp_path / "nope")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- risk-controlled threshold
def test_risk_mode_certifies_the_selective_error_on_the_calibration_part(digits_run, digits_data, tmp_path):
    from training.selective_risk import clopper_pearson_upper, split_validation

    path = export_mod.export_run(
        digits_run, tmp_path / "risk.onnx", data=digits_data, target_risk=0.1, delta=0.1
    )
    art = load_artifact(path)
    a = art.metadata["acceptance"]
    assert a["mode"] == "risk" and a["alpha"] == 0.1 and a["delta"] == 0.1 and art.acceptance == a
    assert art.target_accept_rate is None and art.threshold == a["threshold"]
    _, cal = split_validation(len(digits_data.val))
    out = art.run(digits_data.val.images[cal].astype(np.float32) / 255)
    accepted, _ = art.decide(out)
    wrong = out["logits"].argmax(1) != digits_data.val.labels[cal]
    n, k = int(accepted.sum()), int((accepted & wrong).sum())
    assert (n, k, len(cal)) == (
        a["calibration_accepted"],
        a["calibration_errors_accepted"],
        a["calibration_n"],
    )
    assert a["calibration_coverage"] == pytest.approx(n / len(cal))
    assert a["upper_bound_at_threshold"] == pytest.approx(float(clopper_pearson_upper(k, n, 0.1)))
    assert a["upper_bound_at_threshold"] <= 0.1
    assert art.metadata["calibration"]["n"] == len(cal) and art.metadata["calibration"][
        "accept_rate"
    ] == n / len(cal)


def test_risk_mode_bonferroni_over_candidates_tests_at_delta_over_k(digits_run, digits_data, tmp_path):
    from training.selective_risk import clopper_pearson_upper

    path = export_mod.export_run(
        digits_run, tmp_path / "b.onnx", data=digits_data, target_risk=0.1, delta=0.1, candidates=6
    )
    a = read_metadata(path)[0]["acceptance"]
    assert (
        a["candidates"] == 6
        and a["delta_per_candidate"] == pytest.approx(0.1 / 6)
        and "Bonferroni" in a["statement"]
    )
    bound = float(clopper_pearson_upper(a["calibration_errors_accepted"], a["calibration_accepted"], 0.1 / 6))
    assert a["upper_bound_at_threshold"] == pytest.approx(bound) and bound <= 0.1


def test_cli_risk_not_certifiable_says_the_smallest_certifiable_risk_and_writes_nothing(
    digits_run, tmp_path, capsys
):
    import re

    out = tmp_path / "m.onnx"
    assert export_mod.main([str(digits_run), "--out", str(out), "--target-risk", "0.0001"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: no threshold certifies a selective error <= 0.0001"), (
        err
    )
    assert not out.exists() and _no_leftovers(tmp_path) == []
    smallest = re.search(r"smallest certifiable risk is ([0-9.]+)", err[0]).group(1)
    assert export_mod.main([str(digits_run), "--out", str(out), "--target-risk", smallest]) == 0
    assert "certified: P(selective error" in capsys.readouterr().out
    assert read_metadata(out)[0]["acceptance"]["alpha"] == float(smallest)


def test_cli_delta_without_target_risk_is_an_error(digits_run, capsys):
    assert export_mod.main([str(digits_run), "--delta", "0.1"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --delta and --candidates only apply with --target-risk ALPHA"
    )


def test_artifact_without_the_acceptance_fields_still_loads(digits_artifact, tmp_path):
    """Artifacts exported before the risk mode have no ``acceptance`` block: served as accept-rate artifacts."""
    from serving.artifact_format import sign_metadata

    md, _ = read_metadata(digits_artifact)
    assert md["acceptance"] == {"mode": "accept_rate", "target_accept_rate": md["target_accept_rate"]}
    model = onnx.load(str(digits_artifact))
    sign_metadata(model, {k: v for k, v in md.items() if k not in ("acceptance", "checksum")})
    old = tmp_path / "old.onnx"
    old.write_bytes(model.SerializeToString())
    art = load_artifact(old)
    assert "acceptance" not in art.metadata
    assert art.acceptance == {"mode": "accept_rate", "target_accept_rate": md["target_accept_rate"]}


def test_cli_several_target_risks_choose_on_the_selection_part(digits_run, tmp_path, capsys):
    from training.selective_risk import choose_alpha

    out = tmp_path / "m.onnx"
    assert (
        export_mod.main(
            [str(digits_run), "--out", str(out), "--target-risk", "0.05,0.1,0.2", "--delta", "0.1"]
        )
        == 0
    )
    a = read_metadata(out)[0]["acceptance"]
    assert a["alpha_candidates"] == [0.05, 0.1, 0.2]
    assert a["alpha"] == choose_alpha([0.05, 0.1, 0.2], a["selection_smallest_certifiable_risk"])
    assert a["upper_bound_at_threshold"] <= a["alpha"]
