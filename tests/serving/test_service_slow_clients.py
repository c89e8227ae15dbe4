"""Slow clients over real HTTP: stalled uploads neither starve normal clients nor grow memory, and get a 408."""

from __future__ import annotations

import json
import socket
import time

import httpx
import psutil
import pytest
from conftest import API_KEY

pytestmark = pytest.mark.slow
STALLED = 300


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def stalled_upload(port: int) -> socket.socket:
    """Headers plus the start of a 10 kB JSON body, then silence."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b'\r\nContent-Length: 10000\r\n\r\n{"instances": ['
    )
    return s


def read_response(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += s.recv(65536)
    return int(head.split()[1]), json.loads(body)


def test_stalled_uploads_do_not_starve_normal_clients(hardened, digits_pixels):
    x, _ = digits_pixels
    body = {"instances": x[:1, 0].tolist()}
    headers = {"authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=hardened.url, headers=headers, timeout=10) as client:
        for _ in range(50):  # warm up: allocations of the first requests are not growth
            assert client.post("/predict", json=body).status_code == 200
        before = tree_rss(hardened.proc.pid)
        sockets = [stalled_upload(hardened.port) for _ in range(STALLED)]
        try:
            time.sleep(0.5)  # every stalled request has reached the server
            t0 = time.perf_counter()
            r = client.post("/predict", json=body)
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            assert elapsed < 1.0, f"a normal client waited {elapsed:.2f} s behind {STALLED} stalled uploads"
            during = tree_rss(hardened.proc.pid)
            assert during <= before * 1.10, f"RSS {before / 2**20:.1f} -> {during / 2**20:.1f} MiB"
            # the body deadline (BINENC_BODY_TIMEOUT_S=3 on this server) answers each stalled upload with a 408
            for s in sockets[:5]:
                status, err = read_response(s)
                assert status == 408 and err["error"]["code"] == "body_timeout", err
        finally:
            for s in sockets:
                s.close()
        assert client.post("/predict", json=body).status_code == 200
