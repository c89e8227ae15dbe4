"""serving.artifact and serving.artifact_format: verification at load, provider choice, batching, decisions, annex; never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from serving import artifact_format as F
from serving.artifact import load_artifact
from serving.artifact_format import SCHEMA_VERSION, ArtifactError, read_metadata, write_annex

REPO = Path(__file__).resolve().parents[2]


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model.onnx"
    dst.write_bytes(src.read_bytes())
    return dst


def _rewrite_metadata(path: Path, edit, resign: bool) -> None:
    model = onnx.load(str(path))
    md = json.loads({p.key: p.value for p in model.metadata_props}[F.METADATA_KEY])
    edit(md)
    if resign:
        F.sign_metadata(model, md)
    else:
        F.set_prop(model, F.METADATA_KEY, json.dumps(md))
    path.write_bytes(model.SerializeToString())


def test_load_attributes(digits_artifact):
    art = load_artifact(digits_artifact)
    assert art.path == Path(digits_artifact)
    assert art.classes == [str(i) for i in range(10)]
    assert art.input_shape == (1, 8, 8)
    assert art.score_name == "vertex_distance"
    assert 0 < art.threshold <= 1 and art.target_accept_rate == 0.95
    assert art.provider == art.session.get_providers()[0] == "CPUExecutionProvider"
    assert art.annex == {} and art.metadata["checksum"] == F.compute_checksum(
        onnx.load(str(digits_artifact)), art.metadata
    )


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match=r"no artifact at .*nope\.onnx.*training\.export"):
        load_artifact(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        load_artifact(p)


def test_tampered_graph_is_rejected(digits_artifact, tmp_path):
    p = _copy(digits_artifact, tmp_path)
    model = onnx.load(str(p))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    p.write_bytes(model.SerializeToString())
    with pytest.raises(
        ArtifactError, match=r"checksum mismatch: expected sha256:\w+ .*got sha256:\w+ .*re-export"
    ):
        load_artifact(p)


def test_tampered_metadata_is_rejected(digits_artifact, tmp_path):
    p = _copy(digits_artifact, tmp_path)
    _rewrite_metadata(p, lambda md: md.update(threshold=0.0), resign=False)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(p)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, SCHEMA_VERSION - 1, str(SCHEMA_VERSION), None])
def test_wrong_schema_version(digits_artifact, tmp_path, version):
    p = _copy(digits_artifact, tmp_path)
    _rewrite_metadata(p, lambda md: md.update(schema_version=version), resign=True)
    with pytest.raises(
        ArtifactError, match=rf"expected metadata schema_version {SCHEMA_VERSION}, got {version!r}"
    ):
        load_artifact(p)


def test_missing_fields_and_metadata(digits_artifact, tmp_path):
    p = _copy(digits_artifact, tmp_path)
    _rewrite_metadata(p, lambda md: md.pop("classes"), resign=True)
    with pytest.raises(ArtifactError, match=r"lacks required fields \['classes'\]"):
        load_artifact(p)
    model = onnx.load(str(digits_artifact))
    del model.metadata_props[:]
    p.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactError, match=r"expected ONNX metadata_props key 'binenc'"):
        load_artifact(p)


def test_run_batches_and_shapes(digits_artifact):
    art = load_artifact(digits_artifact)
    x = np.random.default_rng(0).random((70, 1, 8, 8)).astype(np.float32)
    full = art.run(x)
    small = art.run(x, batch_size=16)
    assert tuple(full) == F.OUTPUT_NAMES
    for name in F.OUTPUT_NAMES:
        np.testing.assert_allclose(small[name], full[name], atol=1e-6)
    assert full["logits"].shape == (70, 10) and full["z"].shape == (70, 8)
    assert full["reliability"].shape == (70,) and full["nearest_vertex_class"].dtype == np.int64
    assert {k: v.shape[0] for k, v in art.run(x[:0]).items()} == dict.fromkeys(F.OUTPUT_NAMES, 0)


def test_run_rejects_bad_input(digits_artifact):
    art = load_artifact(digits_artifact)
    with pytest.raises(ArtifactError, match=r"expected pixels of shape \(N, 1, 8, 8\).*got \(3, 8, 8\)"):
        art.run(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ArtifactError, match="got uint8: divide by 255"):
        art.run(np.zeros((2, 1, 8, 8), np.uint8))


def test_decide_reasons(digits_artifact):
    art = load_artifact(digits_artifact)
    outputs = {
        "logits": np.array([[0, 5, 0], [0, 5, 0], [0, 5, 0], [9, 0, 0]], np.float32),
        "nearest_vertex_class": np.array([1, -1, 2, 0]),
        "reliability": np.array([0.9, 0.2, 0.3, 0.4], np.float32),
    }
    accepted, reasons = art.decide(outputs, threshold=0.35)
    assert accepted.tolist() == [True, False, False, True]
    assert reasons == [None, "unoccupied_vertex", "disagrees_with_argmax", None]
    accepted, reasons = art.decide(outputs, threshold=0.95)
    assert reasons == ["below_threshold", "unoccupied_vertex", "disagrees_with_argmax", "below_threshold"]
    accepted, _ = art.decide(outputs)
    assert accepted.tolist() == (outputs["reliability"] >= art.threshold).tolist()


def test_providers(digits_artifact, monkeypatch):
    assert load_artifact(digits_artifact, providers="CPUExecutionProvider").provider == "CPUExecutionProvider"
    with pytest.raises(
        ArtifactError, match=r"expected execution providers among .*got \['NopeExecutionProvider'\]"
    ):
        load_artifact(digits_artifact, providers=["NopeExecutionProvider"])
    # "auto" with CUDA advertised but unusable (no GPU / libraries here) must end on a session that really works.
    import onnxruntime as ort

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    art = load_artifact(digits_artifact)
    assert art.provider == art.session.get_providers()[0]
    assert art.run(np.zeros((1, 1, 8, 8), np.float32))["logits"].shape == (1, 10)


def test_write_annex_keeps_checksum(digits_artifact, tmp_path):
    p = _copy(digits_artifact, tmp_path)
    before, _ = read_metadata(p)
    write_annex(p, {"robustness": {"fgsm": {"eps": [0.1], "acc": [0.5]}}})
    write_annex(p, {"note": "second"})
    md, annex = read_metadata(p)
    assert md == before
    assert annex == {"robustness": {"fgsm": {"eps": [0.1], "acc": [0.5]}}, "note": "second"}
    art = load_artifact(p)
    assert art.annex == annex
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.onnx"]  # atomic: no temp file left
    with pytest.raises(ArtifactError, match="JSON-serialisable"):
        write_annex(p, {"bad": float("nan")})


def test_serving_does_not_import_torch(digits_artifact):
    code = (
        "import sys, numpy as np\n"
        "import serving.artifact as A\n"
        f"art = A.load_artifact({str(digits_artifact)!r})\n"
        "out = art.run(np.zeros((2, 1, 8, 8), np.float32))\n"
        "art.decide(out)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok', art.provider)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")


def test_repeated_metadata_entry_is_refused(digits_artifact, tmp_path):
    """Two ``binenc`` entries: which one is meant is ambiguous (a reader taking the last one served it)."""
    model = onnx.load(str(digits_artifact))
    entry = model.metadata_props.add()
    entry.key, entry.value = F.METADATA_KEY, F.get_props(model)[F.METADATA_KEY]
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match=r"holds \['binenc'\] more than once"):
        read_metadata(path)
