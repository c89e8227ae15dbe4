"""scripts/paper_cifar10.sh (the GPU paper-profile command): every command it would run parses with the real CLIs."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from robustness.config import build_parser as bench_parser
from robustness.config import config_from_args
from training.cli import build_parser as train_parser
from training.config import make_config

REPO = Path(__file__).resolve().parents[2]


def test_paper_cifar10_commands_parse(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "CIFAR10_DIR": str(tmp_path), "NPROC": "2", "SEEDS": "0 1",
           "RUNS": str(tmp_path / "runs")}
    done = subprocess.run(["bash", str(REPO / "scripts" / "paper_cifar10.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line) for line in done.stdout.splitlines()]
    assert len(lines) == 5  # 2 seeds x 2 variants, then the bench
    for argv in lines:
        assert argv[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"] and argv[4] == "-m"
    trains = [train_parser().parse_args(a[6:]) for a in lines[:4]]
    assert {(a.variant, a.seed) for a in trains} == {("bin_enc", 0), ("no_pen", 0), ("bin_enc", 1), ("no_pen", 1)}
    for a in trains:
        cfg = make_config(a.profile, dataset=a.dataset, backbone=a.backbone, device=a.device)
        assert (cfg.dataset, cfg.backbone, cfg.device, cfg.epochs, cfg.gamma_cap) == ("cifar10", "resnet18", "cuda",
                                                                                      800, 1e6)
    bench_argv = lines[4][6:]
    assert lines[4][5] == "robustness.bench"
    cfg = config_from_args(bench_parser().parse_args(bench_argv), bench_argv)
    assert cfg.variants == ("bin_enc", "no_pen") and cfg.seeds == (0, 1) and cfg.device == "cuda"
    assert cfg.profile == "paper" and not cfg.train_missing
