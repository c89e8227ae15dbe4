"""Data-parallel training with ``torchrun`` (2 processes, gloo on CPU) on sklearn digits.

A 2-process run sees the same samples per step as one process (each global batch is split between the ranks, and
the shard losses are weighted by their share of the batch), so its weights equal the 1-process weights up to the
order of floating-point reductions; a killed run resumes, also at another world size; a second writer is refused.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.config import make_config
from training.rundir import RunLock, RunLockedError
from training.train import train

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 12
# Batch 63 splits 32/31 between two ranks, and the epoch's last batch (1294 = 20 * 63 + 34) 17/17; the random
# shifts are drawn for the whole global batch, so each rank shifts its shard as one process would.
RECIPE = dict(
    dataset="digits",
    backbone="mlp",
    latent_dim=8,
    epochs=EPOCHS,
    batch_size=63,
    lr=3e-3,
    head_lr=3e-3,
    gamma_cap=10.0,
    augment_shift=1,
    num_threads=1,
)
CLI = [
    "--dataset",
    "digits",
    "--backbone",
    "mlp",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "63",
    "--lr",
    "3e-3",
    "--head-lr",
    "3e-3",
    "--gamma-cap",
    "10",
    "--augment-shift",
    "1",
    "--threads",
    "1",
    "--quiet",
]
# Reduction order only: 12 epochs of AdamW on float32 leave differences of ~1e-6 (see docs/distributed.md).
TOL = dict(rtol=1e-4, atol=2e-5)


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "training",
        *args,
    ]


def run_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_cmd(nproc, *args), env=run_env(), capture_output=True, text=True, timeout=300
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "w2"
    done = torchrun(2, *CLI, "--out", str(out))
    assert done.returncode == 0, done.stderr[
        -12000:
    ]  # the ranks' own messages come before torchrun's summary
    assert done.stdout.count("done: ") == 1  # rank 0 alone reports (and writes)
    return out


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "w1"
    train(make_config("quick", **RECIPE), out, progress=False)
    return out


def test_two_processes_give_the_weights_of_one_process_with_the_same_global_batch(
    two_process_run, one_process_run
):
    w1, w2 = weights(one_process_run), weights(two_process_run)
    assert list(w1) == list(w2)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], **TOL, msg=name)
    # the tolerance is far below what training moves: the weights differ from the first epoch's by much more
    rows1, rows2 = history(one_process_run), history(two_process_run)
    assert [r["epoch"] for r in rows2] == list(range(EPOCHS)) and {r["world_size"] for r in rows2} == {2}
    for a, b in zip(rows1, rows2, strict=True):
        assert a["gamma"] == b["gamma"] and a["lr"] == b["lr"]  # schedules count steps of the global batch
        assert b["train_ce"] == pytest.approx(a["train_ce"], rel=1e-5)
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1 / 144)
    m1 = json.loads((one_process_run / "metrics.json").read_text())
    m2 = json.loads((two_process_run / "metrics.json").read_text())
    assert m2["test_acc"] == pytest.approx(m1["test_acc"], abs=2 / 359)


def test_training_moves_the_weights_far_beyond_the_tolerance(tmp_path, one_process_run):
    early = train(
        make_config("quick", **{**RECIPE, "epochs": 1}), tmp_path / "e1", progress=False
    ).model.state_dict()
    final = weights(one_process_run)
    assert max(float((final[k] - early[k]).abs().max()) for k in final) > 100 * TOL["atol"]


def test_killed_distributed_run_resumes_to_the_uninterrupted_weights(tmp_path, two_process_run):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun_cmd(2, *CLI, "--out", str(out)),
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, proc.stdout.read()[-3000:]
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] < EPOCHS - 1

    done = torchrun(2, "--out", str(out), "--resume", "--threads", "1", "--quiet")
    assert done.returncode == 0, done.stderr[
        -12000:
    ]  # the ranks' own messages come before torchrun's summary
    final, reference = weights(out), weights(two_process_run)
    for name in reference:
        assert torch.equal(final[name], reference[name]), (
            name
        )  # same world size: the same reductions, bit for bit
    assert [r["epoch"] for r in history(out)] == list(range(EPOCHS))


def test_a_one_process_checkpoint_resumes_on_two_processes(tmp_path, one_process_run):
    out = tmp_path / "w1_then_w2"
    train(make_config("quick", **RECIPE), out, stop_after_epoch=3, progress=False)
    done = torchrun(2, "--out", str(out), "--resume", "--threads", "1", "--quiet")
    assert done.returncode == 0, done.stderr[
        -12000:
    ]  # the ranks' own messages come before torchrun's summary
    rows = history(out)
    assert [r["world_size"] for r in rows] == [1] * 4 + [2] * (EPOCHS - 4)
    reference = weights(one_process_run)
    for name, value in weights(out).items():
        torch.testing.assert_close(value, reference[name], **TOL, msg=name)


def test_a_second_writer_is_refused_in_one_and_in_two_processes(tmp_path):
    out = tmp_path / "busy"
    with RunLock(out):
        with pytest.raises(RunLockedError, match="being written by another process"):
            train(make_config("quick", **{**RECIPE, "epochs": 1}), out, progress=False)
        done = torchrun(2, *CLI, "--out", str(out))
    assert done.returncode != 0
    assert (
        done.stderr.count("being written by another process") == 2
    )  # both ranks stop with the message, no hang
    assert not (out / "checkpoint.pt").exists()
    train(make_config("quick", **{**RECIPE, "epochs": 1}), out, progress=False)  # free again once released
    assert (out / "metrics.json").exists()


def test_current_writer_names_the_lock_holder_until_it_lets_go(tmp_path):
    from training.rundir import current_writer

    assert current_writer(tmp_path) is None
    with RunLock(tmp_path):
        assert current_writer(tmp_path) == f"pid {os.getpid()} on {socket.gethostname()}"
    assert current_writer(tmp_path) is None  # the lock file stays, its lock is gone
    assert (tmp_path / ".writer.lock").is_file()
