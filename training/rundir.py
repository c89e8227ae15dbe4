"""The files of a run directory: their names, the writer lock, the per-epoch history (``metrics.jsonl``) and the
final metrics (``metrics.json``)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

LOCK = ".writer.lock"
CHECKPOINT = "checkpoint.pt"  # the last saved epoch (training.checkpoint); a run without it has not started
HISTORY = "metrics.jsonl"  # one row per epoch
CONFIG = "config.json"  # the settings the run trained with ({"train", "model", "code_version"[, "data"]})
METRICS = "metrics.json"  # the finished run's metrics; its presence marks a finished run


class RunLockedError(RuntimeError):
    """Another process is writing the same run directory."""


class RunLock:
    """Exclusive ``flock`` on ``RUN/.writer.lock`` for as long as a process writes the run directory.

    The kernel drops the lock when its holder exits (even when killed), so a stale lock file never blocks a resume.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is being written by another process ({holder}); wait for it to finish, or "
                "launch several processes with torchrun so that they train one run together"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_writer(run_dir: Path) -> str | None:
    """``"pid N on HOST"`` of the process now writing ``run_dir``, or ``None`` when no process is (a probe: it holds
    a shared lock for an instant)."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)  # also drops the probe's lock
    return None


def read_history(path: Path, before_epoch: int | None = None) -> list[dict]:
    """Rows of ``metrics.jsonl``, all or those of the epochs before ``before_epoch`` (none if the file is missing)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows if before_epoch is None else [r for r in rows if r["epoch"] < before_epoch]


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def remove_unstarted(run_dir: Path) -> None:
    """Remove what a run that failed before its first epoch wrote into a run directory it created."""
    out = Path(run_dir)
    if (out / CHECKPOINT).exists():
        return
    for name in (LOCK, CONFIG, HISTORY):
        (out / name).unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:  # something else lives there: leave it
        pass


def read_metrics(run_dir: Path) -> dict:
    """The finished run's ``metrics.json`` (``{}`` when the run has none)."""
    path = Path(run_dir) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}
