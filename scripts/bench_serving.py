"""Benchmark the BentoML service on loopback (bounded loops; client and server share the machine).

    python scripts/bench_serving.py latency --model M.onnx [--requests 3000]
    python scripts/bench_serving.py load --model M.onnx [--clients 1,16,64] [--seconds 20] [--soak-seconds 60]
    python scripts/bench_serving.py ood --model M.onnx            # Fashion-MNIST model only
    ... [--out docs/serving_bench.json]                            # merges this command's report into the file

``latency``: one keep-alive connection; each round sends ``GET /livez``, a single-image ``POST /predict``
and runs the raw ONNX Runtime session (1 thread, in this process) once, so the three are measured
interleaved under the same conditions; prints the p50s and the ratio
``p50(/predict) / (p50(/livez) + 1.1 × p50(ORT))`` (target <= 1).

``load``: ``wrk`` (Debian package ``wrk``) on single-image ``POST /predict`` with 1, 16 and 64 connections,
the last for ``--soak-seconds``; server with as many workers as cores (``BINENC_WORKERS``); reports
requests/s, p50/p99, non-2xx and socket errors, and the server's RSS (process tree) before and after the
64-connection run (target: 0 5xx, growth <= 10 %).

``ood``: accepted share of the Fashion-MNIST and MNIST test sets through ``/predict``, next to the same
decision taken in-process (they must agree).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil

from serving.artifact import load_artifact
from serving.artifact_format import INPUT_NAME, OUTPUT_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


# --------------------------------------------------------------------------- server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``bentoml serve`` of ``model`` on a free loopback port, in its own process group."""

    def __init__(self, model: Path, workers: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.home = tempfile.mkdtemp(prefix="binenc-bench-")
        env = {
            **os.environ,
            "BINENC_MODEL_PATH": str(model),
            "BENTOML_HOME": self.home,
            "BINENC_WORKERS": str(workers),
            "BENTOML_DO_NOT_TRACK": "True",
            **(extra_env or {}),
        }
        env.pop("BINENC_MODEL_TAG", None)
        self.log = Path(self.home) / "serve.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if get(self.port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("bentoml serve did not become ready in 180 s")

    def rss(self) -> int:
        proc = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    def cpu_seconds(self) -> float:
        proc = psutil.Process(self.proc.pid)
        times = [p.cpu_times() for p in [proc, *proc.children(recursive=True)]]
        return sum(t.user + t.system for t in times)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- payloads
def test_images(dataset: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 (N, C, H, W) test images of ``dataset``."""
    from training.data import load_raw

    images = load_raw(dataset).test.images
    return images[np.random.default_rng(seed).permutation(len(images))[:n]]


def predict_body(images_u8: np.ndarray) -> bytes:
    inst = images_u8[:, 0] if images_u8.shape[1] == 1 else images_u8
    return json.dumps({"instances": inst.tolist(), "pixel_range": "0-255"}, separators=(",", ":")).encode()


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


# --------------------------------------------------------------------------- latency
def raw_session(model: Path) -> ort.InferenceSession:
    """The model in a plain ONNX Runtime session: 1 intra-op thread, no spinning (the server's settings)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def latency(args: argparse.Namespace) -> dict[str, Any]:
    art = load_artifact(args.model, providers="CPUExecutionProvider")
    image = test_images(art.metadata["dataset"], 1)
    body, x = predict_body(image), image.astype(np.float32) / 255.0
    sess = raw_session(args.model)
    server = Served(args.model, workers=1, extra_env=dict(kv.split("=", 1) for kv in args.env))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        times: dict[str, list[float]] = {"livez": [], "predict": [], "ort": []}
        headers = {"Content-Type": "application/json"}
        for i in range(args.warmup + args.requests):
            t0 = time.perf_counter()
            conn.request("GET", "/livez")
            r = conn.getresponse()
            r.read()
            t1 = time.perf_counter()
            conn.request("POST", "/predict", body, headers)
            r2 = conn.getresponse()
            data = r2.read()
            t2 = time.perf_counter()
            sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
            t3 = time.perf_counter()
            if r.status != 200 or r2.status != 200:
                raise RuntimeError(f"/livez {r.status}, /predict {r2.status}: {data[:300]!r}")
            if i >= args.warmup:
                for key, dt in (("livez", t1 - t0), ("predict", t2 - t1), ("ort", t3 - t2)):
                    times[key].append(dt)
        cpu = server_cpu_per_request(server, conn, body, headers, args.requests)
        t0 = time.process_time()
        for _ in range(args.requests):
            sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        cpu["ort_us"] = round((time.process_time() - t0) / args.requests * 1e6, 1)
        conn.close()
    finally:
        server.stop()
    out = {k: percentiles(v) for k, v in times.items()}
    cpu["ratio"] = round(cpu["predict_us"] / (cpu["livez_us"] + 1.1 * cpu["ort_us"]), 3)
    out["server_cpu"] = cpu
    print(
        f"server CPU per request: /livez {cpu['livez_us']} us, /predict {cpu['predict_us']} us; raw ORT "
        f"{cpu['ort_us']} us; /predict / (/livez + 1.1 x ORT) = {cpu['ratio']}"
    )
    budget = out["livez"]["p50_ms"] + 1.1 * out["ort"]["p50_ms"]
    out["requests"] = args.requests
    out["ratio"] = round(out["predict"]["p50_ms"] / budget, 3)
    out["overhead_ms"] = round(out["predict"]["p50_ms"] - out["livez"]["p50_ms"] - out["ort"]["p50_ms"], 4)
    print(
        f"p50 /livez {out['livez']['p50_ms']:.3f} ms, POST /predict {out['predict']['p50_ms']:.3f} ms "
        f"(p99 {out['predict']['p99_ms']:.3f}), raw ORT {out['ort']['p50_ms']:.3f} ms; "
        f"/predict / (/livez + 1.1 x ORT) = {out['ratio']:.3f} (target <= 1)"
    )
    return out


def server_cpu_per_request(
    server: Served, conn: http.client.HTTPConnection, body: bytes, headers: dict, n: int
) -> dict[str, float]:
    """CPU time (user + system) the server process tree spends per ``/livez`` and per ``/predict`` request,
    each over ``n`` sequential requests: steadier than wall time when other jobs share the cores."""
    out = {}
    for key, method, path, payload in (
        ("livez_us", "GET", "/livez", None),
        ("predict_us", "POST", "/predict", body),
    ):
        before = server.cpu_seconds()
        for _ in range(n):
            conn.request(method, path, payload, headers if payload else {})
            conn.getresponse().read()
        out[key] = round((server.cpu_seconds() - before) / n * 1e6, 1)
    return out


# --------------------------------------------------------------------------- load (wrk)
def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    pct = {
        m.group(1): ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests": int(total.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": round(pct["50"], 3),
        "p99_ms": round(pct["99"], 3),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)
        )
        if errors
        else {},
    }


def run_wrk(port: int, script: Path, clients: int, seconds: float) -> dict[str, Any]:
    threads = min(clients, os.cpu_count() or 1)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{clients}",
        f"-d{int(seconds)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/predict",
    ]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    out = {
        "clients": clients,
        "seconds": seconds,
        "command": " ".join(cmd[:-3]) + " -s predict.lua URL/predict",
        **parse_wrk(text),
    }
    print(
        f"{clients:3d} connections, {seconds:.0f} s: {out['rps']:.0f} req/s, p50 {out['p50_ms']} ms, "
        f"p99 {out['p99_ms']} ms, non-2xx {out['non_2xx']}, socket errors {out['socket_errors']}"
    )
    return out


def load(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    art = load_artifact(args.model, providers="CPUExecutionProvider")
    script = Path(tempfile.mkdtemp(prefix="binenc-wrk-")) / "predict.lua"
    script.write_text(WRK_SCRIPT % predict_body(test_images(art.metadata["dataset"], 1)).decode())
    workers = args.workers or os.cpu_count() or 1
    server = Served(args.model, workers=workers)
    runs = []
    try:
        run_wrk(server.port, script, 16, 5)  # warm-up (not reported)
        for clients in args.clients:
            last = clients == max(args.clients)
            rss_before = server.rss()
            res = run_wrk(server.port, script, clients, args.soak_seconds if last else args.seconds)
            if last:
                rss_after = server.rss()
                res["rss_mib"] = [round(rss_before / 2**20, 1), round(rss_after / 2**20, 1)]
                res["rss_growth"] = round((rss_after - rss_before) / rss_before, 4)
                print(f"server RSS {res['rss_mib'][0]} -> {res['rss_mib'][1]} MiB ({res['rss_growth']:+.2%})")
            runs.append(res)
    finally:
        server.stop()
        shutil.rmtree(script.parent, ignore_errors=True)
    return {"workers": workers, "cpus": os.cpu_count(), "runs": runs}


# --------------------------------------------------------------------------- out-of-distribution acceptance
def ood(args: argparse.Namespace) -> dict[str, Any]:
    from training.data import MNIST_TEST_DIR, find_idx, load_raw, read_idx

    art = load_artifact(args.model, providers="CPUExecutionProvider")
    sets = {
        "fashion-mnist": load_raw("fashion-mnist").test.images,
        "mnist": read_idx(find_idx(MNIST_TEST_DIR, "t10k-images-idx3-ubyte"))[:, None],
    }
    server = Served(args.model)
    result = {}
    try:
        for name, images in sets.items():
            conn = http.client.HTTPConnection(
                "127.0.0.1", server.port, timeout=60
            )  # idle ones close after 5 s
            accepted = 0
            for i in range(0, len(images), 100):
                conn.request(
                    "POST",
                    "/predict",
                    predict_body(images[i : i + 100]),
                    {"Content-Type": "application/json"},
                )
                r = conn.getresponse()
                preds = json.loads(r.read())["predictions"]
                accepted += sum(p["accepted"] for p in preds)
            conn.close()
            ref, _ = art.decide(art.run(images.astype(np.float32) / 255.0))
            result[name] = {
                "n": len(images),
                "accepted_share": round(accepted / len(images), 4),
                "inprocess_accepted_share": round(float(ref.mean()), 4),
            }
            print(f"{name}: {accepted / len(images):.1%} accepted over HTTP, {ref.mean():.1%} in-process")
    finally:
        server.stop()
    return result


def recorded_path(path) -> str:
    """``path`` as the report records it: relative to the working directory when under it, else its last two
    parts (a report holds no machine paths)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    if p.resolve().is_relative_to(Path.cwd().resolve()):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return str(Path(*p.parts[-2:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("latency", "load", "ood"))
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--requests", type=int, default=3000, help="latency: measured rounds")
    ap.add_argument("--warmup", type=int, default=300, help="latency: rounds before measuring")
    ap.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=20.0, help="load: seconds per level but the last")
    ap.add_argument(
        "--soak-seconds", type=float, default=60.0, help="load: seconds of the last (largest) level"
    )
    ap.add_argument("--workers", type=int, default=None, help="load: server workers (default: CPU count)")
    ap.add_argument(
        "--env", action="append", default=[], metavar="BINENC_X=V", help="latency: server setting"
    )
    ap.add_argument("--out", type=Path, default=None, help="merge the report into this JSON file")
    args = ap.parse_args(argv)
    report = {"latency": latency, "load": load, "ood": ood}[args.command](args)
    report = {
        "model": recorded_path(args.model),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        **report,
    }
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        old = (
            {k: v for k, v in old.items() if k in ("latency", "load", "ood")} if isinstance(old, dict) else {}
        )
        args.out.write_text(json.dumps({**old, args.command: report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
