"""``--onnx``: a classifier given only as an ONNX graph, benched from its outputs (black-box upper bounds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from robustness import bench
from robustness.onnx_attacks import LogitOption, square_all_targets, square_untargeted, wrong_classes
from robustness.onnx_bench import DETECTORS
from robustness.onnx_model import OnnxModelError, predictor, read_onnx


def _export(
    net: nn.Module, path: Path, shape=(1, 8, 8), dynamic_all: bool = False, names=("logits",)
) -> Path:
    axes = {"pixels": {0: "n", 1: "c", 2: "h", 3: "w"} if dynamic_all else {0: "n"}}
    axes.update({n: {0: "n"} for n in names})
    torch.onnx.export(
        net.eval(),
        torch.rand(2, *shape),
        str(path),
        input_names=["pixels"],
        output_names=list(names),
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory, digits_data) -> Path:
    """A small MLP trained on digits outside this project's code, exported to ONNX (logits only)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.as_tensor(digits_data.train.images, dtype=torch.float32) / 255.0
    y = torch.as_tensor(digits_data.train.labels, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return _export(net, tmp_path_factory.mktemp("onnx") / "digits_mlp.onnx")


def test_defended_outputs_encode_predicted_and_accepted():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(500, 6)) * rng.uniform(0.1, 8, size=(500, 1))).astype(np.float32)
    for name, make in DETECTORS.items():
        det = make()
        opt = LogitOption(name, det, float(np.median(LogitOption(name, det, 0.0).score(logits))))
        top = opt.defended(logits).argmax(1)
        accepted = opt.score(logits) >= opt.threshold
        assert 0.3 < accepted.mean() < 0.7
        assert np.array_equal(top == 6, ~accepted), name
        assert np.array_equal(top[accepted], logits.argmax(1)[accepted]), name
    assert wrong_classes(np.array([[0.0, 3.0, 1.0]]), np.array([1])).tolist() == [[2, 0]]


def test_the_defended_attack_counts_only_accepted_wrong_predictions(digits_onnx, digits_data):
    spec = read_onnx(digits_onnx, (1, 8, 8), 10)
    fn = predictor(spec, threads=1)
    x = torch.as_tensor(digits_data.test.images[:20], dtype=torch.float32) / 255.0
    y = torch.as_tensor(digits_data.test.labels[:20], dtype=torch.long)
    plain, _ = square_untargeted(fn, x, y, "linf", 0.5, 300, seed=0)
    assert plain.mean() >= 0.9  # the attack reaches the model through the graph
    accept_all = LogitOption("max_logit", DETECTORS["max_logit"](), -np.inf)
    accept_none = LogitOption("max_logit", DETECTORS["max_logit"](), np.inf)
    broken_all, _ = square_all_targets(fn, accept_all, x, y, "linf", 0.5, 300, seed=0)
    broken_none, _ = square_all_targets(fn, accept_none, x, y, "linf", 0.5, 300, seed=0)
    assert broken_all.mean() >= 0.9 and not broken_none.any()


def test_onnx_files_the_bench_cannot_use_are_refused_with_one_line(tmp_path, digits_onnx, capsys):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    probs = _export(nn.Sequential(mlp, nn.Softmax(1)), tmp_path / "probs.onnx")
    with pytest.raises(OnnxModelError, match="probabilities"):
        read_onnx(probs, (1, 8, 8), 10)
    with pytest.raises(
        OnnxModelError, match=r"takes images of shape \(1, 8, 8\); the dataset's are \(1, 28, 28\)"
    ):
        read_onnx(digits_onnx, (1, 28, 28), 10)
    with pytest.raises(OnnxModelError, match="returned a .* shape"):
        read_onnx(digits_onnx, (1, 8, 8), 3)
    symbolic = _export(mlp, tmp_path / "symbolic.onnx", dynamic_all=True)
    with pytest.raises(OnnxModelError, match="give --onnx-input-shape"):
        read_onnx(symbolic, (1, 8, 8), 10)
    assert read_onnx(symbolic, (1, 8, 8), 10, given_shape=(1, 8, 8)).input_shape == (1, 8, 8)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, x):
            out = self.mlp(x)
            return out, out.relu()

    two = _export(Two(), tmp_path / "two.onnx", names=("a", "b"))
    with pytest.raises(OnnxModelError, match="name the logits with --onnx-output"):
        read_onnx(two, (1, 8, 8), 10)
    assert read_onnx(two, (1, 8, 8), 10, output="a").output_name == "a"
    external = onnx.load(str(digits_onnx))
    onnx.save_model(
        external,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    with pytest.raises(OnnxModelError, match="external files"):
        read_onnx(tmp_path / "ext.onnx", (1, 8, 8), 10)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        read_onnx(tmp_path / "junk.onnx", (1, 8, 8), 10)
    rc = bench.main(["--onnx", str(probs), "--dataset", "digits", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --onnx ") and "probabilities" in err[0]


def test_onnx_bench_on_digits_reports_black_box_upper_bounds(tmp_path, monkeypatch, digits_onnx):
    monkeypatch.chdir(tmp_path)
    rc = bench.main(
        [
            "--onnx",
            str(digits_onnx),
            "--dataset",
            "digits",
            "--n-samples",
            "40",
            "--n-ood",
            "100",
            "--n-id",
            "200",
            "--ood-sets",
            "gaussian,inverted",
            "--square-queries",
            "100",
            "--threads",
            "1",
            "--quiet",
            "--out",
            "out",
        ]
    )
    assert rc == 0
    res = json.loads(Path("out/results.json").read_text())
    assert res["models"] == {} and list(res["blackbox"]) == ["digits_mlp"]
    assert res["config"]["adversarial"]["budget"]["square_queries"] == 100
    e = res["blackbox"]["digits_mlp"]
    assert e["access"] == "black-box" and e["upper_bounds"] and e["test_acc"] > 0.85
    assert all(f["ok"] for f in e["flags"]), e["flags"]
    clean = e["clean_acc"]["value"]
    linf, l2 = e["robust"]["linf"], e["robust"]["l2"]
    assert linf["upper_bound"] and linf["value"] <= clean and l2["value"] <= clean
    assert set(e["reject"]) == set(DETECTORS)
    for r in e["reject"].values():
        assert 0.85 <= r["id_accept_rate"] <= 1 and r["linf"]["value"] <= clean
    assert set(e["ood"]) == {"gaussian", "inverted"} and "auroc_ci95" in e["ood"]["gaussian"]["energy"]
    report = Path("out/report.md").read_text()
    assert "black-box upper bounds" in report and "| digits_mlp | max_softmax |" in report


def test_a_run_and_an_onnx_graph_share_one_bench(tmp_path, monkeypatch, digits_run, digits_onnx):
    monkeypatch.chdir(tmp_path)
    run = shutil.copytree(
        digits_run, tmp_path / "run"
    )  # a copy: the bench's annex must not touch the fixture
    rc = bench.main(
        [
            "--run",
            str(run),
            "--onnx",
            str(digits_onnx),
            "--attacks",
            "fgsm",
            "--n-samples",
            "10",
            "--n-ood",
            "50",
            "--n-id",
            "100",
            "--attack-steps",
            "2",
            "--ood-sets",
            "gaussian",
            "--square-queries",
            "50",
            "--adaptive-escalations",
            "1",
            "--threads",
            "1",
            "--quiet",
            "--out",
            "out",
        ]
    )
    assert rc in (0, 3)
    res = json.loads(Path("out/results.json").read_text())
    assert list(res["models"]) and list(res["blackbox"]) == ["digits_mlp"]
    entry = next(iter(res["models"].values()))
    assert res["blackbox"]["digits_mlp"]["n"] == entry["adversarial"]["n"]["expensive"]  # the same points
    assert res["blackbox"]["digits_mlp"]["train_config"]["split_seed"] == entry["seed"]
    report = Path("out/report.md").read_text()
    assert "## Headline" in report and "black-box upper bounds" in report


def test_the_example_exports_a_graph_the_bench_accepts(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "fashion_cnn.onnx"
    subprocess.run(
        [
            sys.executable,
            str(root / "examples/outside/to_onnx.py"),
            str(root / "examples/outside/fashion_cnn.pt"),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    spec = read_onnx(out, (1, 28, 28), 10)
    assert (spec.input_name, spec.output_name, spec.input_shape) == ("images", "logits", (1, 28, 28))
