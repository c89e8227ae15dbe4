"""Start and stop a real ``bentoml serve`` subprocess for the serving tests (and the benchmark script).

The server runs from the repository root (so ``bentoml serve`` finds ``bentofile.yaml``) in its own process
group, on a free loopback port, with its log in a file that is shown when startup fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this module started (start_new_session=True)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start_server(
    extra_env: dict[str, str | None] | None = None,
    target: list[str] | None = None,
    cwd: Path = REPO_ROOT,
    ready_timeout: float = 180.0,
    ready_headers: dict[str, str] | None = None,
) -> Server:
    """``python -m bentoml serve [target] --port P`` from ``cwd``; waits until ``/readyz`` answers 200 (asked with
    ``ready_headers``, e.g. an API key when no route is open).

    ``extra_env`` values of ``None`` remove the variable. ``BENTOML_HOME`` must already be set (the test
    session's temporary home); tracking is always off.
    """
    port = free_port()
    env = dict(os.environ)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="binenc-bentoml-"))
    for key, value in (extra_env or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    log_fd, log_name = tempfile.mkstemp(prefix="binenc-serve-", suffix=".log")
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        *(target or []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True
    )
    os.close(log_fd)
    server = Server(f"http://127.0.0.1:{port}", port, proc, Path(log_name), env)
    deadline = time.monotonic() + ready_timeout
    with httpx.Client(timeout=2.0, headers=ready_headers) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if client.get(server.url + "/readyz").status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"bentoml serve not ready after {ready_timeout:.0f} s:\n{server.log_tail()}")
