"""scripts/paper_cifar10.sh (the GPU paper-profile command): every command it would run parses with the real CLIs,
and the script runs end to end on CPU when shrunk to a tiny CIFAR-10."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from robustness.bench_cli import build_parser as bench_parser
from robustness.bench_cli import config_from_args
from training.cli import build_parser as train_parser
from training.cli import train_config

REPO = Path(__file__).resolve().parents[2]


def test_paper_cifar10_commands_parse(tmp_path):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "CIFAR10_DIR": str(tmp_path),
        "NPROC": "2",
        "SEEDS": "0 1",
        "RUNS": str(tmp_path / "runs"),
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "paper_cifar10.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line) for line in done.stdout.splitlines()]
    assert len(lines) == 5  # 2 seeds x 2 variants, then the bench
    for argv in lines:
        assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"] and argv[4] == "-m"
    trains = [train_parser().parse_args(a[6:]) for a in lines[:4]]
    assert {(a.variant, a.seed) for a in trains} == {
        ("bin_enc", 0),
        ("no_pen", 0),
        ("bin_enc", 1),
        ("no_pen", 1),
    }
    for a in trains:
        cfg = train_config(a)
        assert (cfg.dataset, cfg.backbone, cfg.device, cfg.epochs, cfg.gamma_cap) == (
            "cifar10",
            "resnet18",
            "cuda",
            800,
            1e6,
        )
    bench_argv = lines[4][6:]
    assert lines[4][5] == "robustness.bench"
    cfg = config_from_args(bench_parser().parse_args(bench_argv), bench_argv)
    runs_dir = tmp_path / "runs"
    assert cfg.runs == tuple(
        str(runs_dir / f"cifar10_resnet18_paper_{v}_s{s}") for s in (0, 1) for v in ("bin_enc", "no_pen")
    )
    assert cfg.device == "cuda" and cfg.profile == "paper" and not cfg.train_missing


def _tiny_cifar10(root: Path, per_class: int, n_test_per_class: int) -> None:
    """CIFAR-10 in torchvision's pickle layout: each class a bright square at its own place on noise."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n_per_class: int) -> dict:
        labels = np.repeat(np.arange(10), n_per_class)
        images = rng.integers(0, 64, (len(labels), 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 4)
            images[i, c % 3, 8 * r : 8 * r + 8, 8 * col : 8 * col + 8] = 255
        return {"data": images.reshape(len(labels), 3072), "labels": labels.tolist()}

    for name, n in [("data_batch_1", per_class), ("test_batch", n_test_per_class)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch(n), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_paper_cifar10_script_trains_and_benches_on_cpu(tmp_path):
    """The script end to end, shrunk by DEVICE / TRAIN_ARGS / BENCH_ARGS: both heads trained on a tiny CIFAR-10 with
    the paper profile's schedule (3 epochs; the small `cnn` instead of ResNet-18, which takes minutes per epoch on
    CPU), then the bench on exactly those runs."""
    _tiny_cifar10(tmp_path / "cifar", per_class=26, n_test_per_class=4)
    env = {
        **os.environ,
        "CIFAR10_DIR": str(tmp_path / "cifar"),
        "RUNS": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "bench"),
        "DEVICE": "cpu",
        "PYTHON": sys.executable,
        "TRAIN_ARGS": "--backbone cnn --epochs 3 --batch-size 32 --lr 3e-3 --head-lr 3e-3 --val-fraction 0.2 --threads 2",
        "BENCH_ARGS": "--n-samples 6 --n-id 30 --n-ood 20 --attack-steps 2 --attacks fgsm --ood-sets gaussian "
        "--adaptive-escalations 1 --threads 2",
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "paper_cifar10.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for variant in ("bin_enc", "no_pen"):
        run = tmp_path / "runs" / f"cifar10_resnet18_paper_{variant}_s0"
        cfg = json.loads((run / "config.json").read_text())["train"]
        assert (cfg["dataset"], cfg["profile"], cfg["epochs"], cfg["gamma_factor"]) == (
            "cifar10",
            "paper",
            3,
            1.05,
        )
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert sorted(m["variant"] for m in results["models"].values()) == ["bin_enc", "no_pen"]
    assert not results.get("unmeasured")
    # a second call finds both runs finished and only benches again
    again = subprocess.run(
        ["bash", str(REPO / "scripts" / "paper_cifar10.sh")],
        env={**env, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 1
    assert "robustness.bench" in again.stdout
