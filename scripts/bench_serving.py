"""Benchmark the BentoML service on loopback against in-process ONNX Runtime (bounded loops only).

    python scripts/bench_serving.py --model runs/NAME/model.onnx [--soak-seconds 20] [--ood] [--out bench.json]

Starts ``bentoml serve`` (from the repo root, BINENC_MODEL_PATH=--model, a temporary BENTOML_HOME, tracking
off) on a free 127.0.0.1 port, or uses ``--url`` of a running server, then measures:

1. in-process ORT: ms per single image, images/s at ``--batch-size``;
2. HTTP single-image ``POST /predict`` latency p50/p99 (one keep-alive connection, sequential);
3. throughput (requests/s) of single-image ``/predict`` with 1, 8, 32, 64 concurrent clients;
4. images/s at ``--batch-size`` through ``/predict_batch`` (adaptive batching route), ``/predict`` and OIP
   ``/v2/.../infer`` with binary tensors, next to in-process ORT at the same batch size;
5. a soak: 64 clients for ``--soak-seconds``, counting 2xx / 4xx / 429 / 503 / other 5xx / connection errors;
6. server RSS (process tree) after warm-up and after the soak;
7. with ``--ood``: share of Fashion-MNIST test images vs MNIST test images (``--mnist-dir``, IDX) accepted
   over HTTP (only meaningful for a Fashion-MNIST model).

The client runs on the same machine as the server (asyncio, raw HTTP/1.1 keep-alive), so on a small box the
numbers include the client's CPU. Targets (2 cores): single-image p50 <= 2.0 ms; batch route >= 50% of
in-process ORT images/s; no 5xx under 64 clients; RSS growth <= 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from serving.artifact import INPUT_NAME, load_artifact  # noqa: E402

log = logging.getLogger("bench_serving")
TARGETS = {"p50_ms": 2.0, "batch_vs_ort": 0.5, "rss_growth": 0.10}


# --------------------------------------------------------------------------- server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, port: int, home: str) -> subprocess.Popen:
    env = {**os.environ, "BINENC_MODEL_PATH": str(model.resolve()), "BENTOML_HOME": home,
           "BENTOML_DO_NOT_TRACK": "True"}
    logf = open(Path(home) / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(Path(home) / 'serve.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError("server not ready after 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def tree_rss(pid: int) -> int:
    """Resident set size of a process and all its descendants, in bytes (psutil, else /proc)."""
    try:
        import psutil

        root = psutil.Process(pid)
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    except ImportError:
        pids, frontier = [pid], [pid]
        while frontier:
            nxt = []
            for p in frontier:
                try:
                    children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
                except OSError:
                    children = []
                nxt += [int(c) for c in children]
            pids += nxt
            frontier = nxt
        total = 0
        for p in pids:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total


# --------------------------------------------------------------------------- a minimal keep-alive client
class Conn:
    """One HTTP/1.1 keep-alive connection (raw asyncio streams: far less client CPU than a full client)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def post(self, path: str, body: bytes, content_type: str = "application/json",
                   extra_headers: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            await self._connect()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{extra_headers}\r\n").encode()
        self.writer.write(head + body)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw_head[9:12])
        headers = {}
        for line in raw_head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data


async def closed_loop(host: str, port: int, clients: int, seconds: float, path: str, body: bytes,
                      content_type: str = "application/json", extra_headers: str = "",
                      max_requests: int | None = None) -> dict[str, Any]:
    """``clients`` connections each send the same request back to back for ``seconds`` (or ``max_requests``)."""
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    budget = [max_requests if max_requests is not None else 1 << 62]

    async def worker() -> None:
        conn = Conn(host, port)
        try:
            while time.perf_counter() < stop_at and budget[0] > 0:
                budget[0] -= 1
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.post(path, body, content_type, extra_headers)
                    key = str(status)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    key = f"conn_error:{type(err).__name__}"
                    await conn.close()
                latencies.append(time.perf_counter() - t0)
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            await conn.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - t_start
    lat = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {
        "clients": clients, "seconds": round(elapsed, 3), "requests": len(latencies), "ok": ok,
        "rps": round(ok / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3), "statuses": statuses,
    }


# --------------------------------------------------------------------------- payloads
def predict_body(images_u8: np.ndarray, channels: int) -> bytes:
    inst = images_u8[:, 0] if channels == 1 else images_u8
    return json.dumps({"instances": inst.tolist(), "pixel_range": "0-255"}, separators=(",", ":")).encode()


def batch_body(images_u8: np.ndarray) -> bytes:
    x = np.round(images_u8.astype(np.float32) / 255.0, 4)
    return json.dumps({"pixels": x.tolist()}, separators=(",", ":")).encode()


def oip_body(images_u8: np.ndarray) -> tuple[bytes, str]:
    x = np.ascontiguousarray(images_u8.astype(np.float32) / 255.0)
    header = json.dumps({"inputs": [{"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "reliability", "parameters": {"binary_data": True}},
                                     {"name": "probs", "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), f"Inference-Header-Content-Length: {len(header)}\r\n"


def sample_images(art, n: int, seed: int = 0) -> np.ndarray:
    """Real test images when the model's dataset can be loaded here, else random uint8 noise."""
    try:
        from training.data import load_raw

        images = load_raw(art.metadata["dataset"]).test.images
        return images[np.random.default_rng(seed).permutation(len(images))[:n]]
    except Exception as err:  # noqa: BLE001 - any loader problem: fall back to noise, say so
        log.warning("could not load %s test images (%s); using random pixels", art.metadata.get("dataset"), err)
        c, h, w = art.input_shape
        return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- measurements
def bench_inprocess(sess, images: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    one = images[:1].astype(np.float32) / 255.0
    xb = images[:batch].astype(np.float32) / 255.0
    for _ in range(5):
        sess.run(None, {INPUT_NAME: one})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: one})
        times.append(time.perf_counter() - t0)
    sess.run(None, {INPUT_NAME: xb})
    n_b = max(3, repeats // 20)
    t0 = time.perf_counter()
    for _ in range(n_b):
        sess.run(None, {INPUT_NAME: xb})
    per_batch = (time.perf_counter() - t0) / n_b
    return {"single_ms_p50": round(float(np.median(times)) * 1000, 3), "batch": batch,
            "batch_ms": round(per_batch * 1000, 3), "batch_images_per_s": round(batch / per_batch, 1)}


async def bench_http(host: str, port: int, art, images: np.ndarray, args) -> dict[str, Any]:
    c = art.input_shape[0]
    single = predict_body(images[:1], c)
    out: dict[str, Any] = {}
    log.info("warm-up")
    await closed_loop(host, port, 4, 2.0, "/predict", single, max_requests=200)

    log.info("single-image latency (%d sequential requests)", args.latency_requests)
    out["latency"] = await closed_loop(host, port, 1, 120.0, "/predict", single, max_requests=args.latency_requests)

    out["throughput"] = []
    for clients in args.concurrency:
        log.info("throughput with %d clients for %.0f s", clients, args.level_seconds)
        out["throughput"].append(await closed_loop(host, port, clients, args.level_seconds, "/predict", single))

    b = args.batch_size
    oip = oip_body(images[:b])
    routes = {
        "predict_batch": ("/predict_batch", batch_body(images[:b]), "application/json", ""),
        "predict": ("/predict", predict_body(images[:b], c), "application/json", ""),
        "oip_binary": (f"/v2/models/{args.oip_model}/infer", oip[0], "application/octet-stream", oip[1]),
    }
    out["batch_routes"] = {}
    for name, (path, body, ctype, extra) in routes.items():
        log.info("batch of %d through %s (%d clients, %.0f s)", b, name, args.batch_clients, args.level_seconds)
        res = await closed_loop(host, port, args.batch_clients, args.level_seconds, path, body, ctype, extra)
        res["images_per_s"] = round(res["rps"] * b, 1)
        res["body_bytes"] = len(body)
        out["batch_routes"][name] = res

    # adaptive batching proper: many clients sending ONE image each to the batch route
    log.info("single images from 32 clients through /predict_batch (%.0f s)", args.level_seconds)
    res = await closed_loop(host, port, 32, args.level_seconds, "/predict_batch", batch_body(images[:1]))
    out["batch_route_single_image_32_clients"] = res
    return out


async def soak(host: str, port: int, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    res = await closed_loop(host, port, clients, seconds, "/predict", body)
    st = res["statuses"]
    res["count_5xx"] = sum(v for k, v in st.items() if k.startswith("5"))
    res["count_429_503"] = st.get("429", 0) + st.get("503", 0)
    res["count_4xx"] = sum(v for k, v in st.items() if k.startswith("4"))
    res["conn_errors"] = sum(v for k, v in st.items() if k.startswith("conn_error"))
    return res


async def ood_shares(host: str, port: int, art, n: int, mnist_dir: str | None) -> dict[str, Any]:
    """Accepted share over HTTP, next to the same images decided in-process (they must agree)."""
    from training.data import MNIST_TEST_DIR, Split, find_idx, load_raw, read_idx

    fm = load_raw("fashion-mnist").test
    mnist = Path(mnist_dir) if mnist_dir else MNIST_TEST_DIR
    mn = Split(read_idx(find_idx(mnist, "t10k-images-idx3-ubyte"))[:, None],
               read_idx(find_idx(mnist, "t10k-labels-idx1-ubyte")).astype(np.int64))
    c = art.input_shape[0]
    conn = Conn(host, port)
    result = {}
    try:
        for name, split in (("fashion-mnist", fm), ("mnist", mn)):
            accepted = correct = total = 0
            reasons: dict[str, int] = {}
            for i in range(0, min(n, len(split)), 100):
                imgs = split.images[i : min(i + 100, n)]
                status, data = await conn.post("/predict", predict_body(imgs, c))
                if status != 200:
                    raise RuntimeError(f"/predict answered {status}: {data[:300]!r}")
                preds = json.loads(data)["predictions"]
                for p, y in zip(preds, split.labels[i : i + len(preds)], strict=True):
                    accepted += p["accepted"]
                    correct += p["label"] == int(y)
                    if not p["accepted"]:
                        reasons[p["reason"]] = reasons.get(p["reason"], 0) + 1
                total += len(preds)
            ref_acc, _ = art.decide(art.run(split.images[:total].astype(np.float32) / 255.0))
            result[name] = {"n": total, "accepted_share": round(accepted / total, 4),
                            "inprocess_accepted_share": round(float(ref_acc.mean()), 4),
                            "label_match": round(correct / total, 4), "rejection_reasons": reasons}
        # the same Fashion-MNIST images as PNG uploads: as they are (28x28, must match /predict exactly) and
        # as a user might photograph them (4x larger, dark object on white), which exercises the policy
        import io

        from PIL import Image

        n_img = min(1000, n)
        for variant in ("as_is", "x4_inverted"):
            accepted = agree = 0
            for i in range(0, n_img, 50):
                parts = []
                for j, img in enumerate(fm.images[i : i + 50, 0]):
                    if variant == "x4_inverted":
                        img = np.asarray(Image.fromarray(255 - img).resize((112, 112), Image.Resampling.BILINEAR))
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, "PNG")
                    parts.append(b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"image\"; "
                                 b"filename=\"%d.png\"\r\nContent-Type: image/png\r\n\r\n%s\r\n" % (j, buf.getvalue()))
                body = b"".join(parts) + b"--BOUNDARY--\r\n"
                status, data = await conn.post("/predict_image", body, "multipart/form-data; boundary=BOUNDARY")
                if status != 200:
                    raise RuntimeError(f"/predict_image answered {status}: {data[:300]!r}")
                preds = json.loads(data)["predictions"]
                status, data = await conn.post("/predict", predict_body(fm.images[i : i + 50], c))
                direct = json.loads(data)["predictions"]
                accepted += sum(p["accepted"] for p in preds)
                agree += sum(p["label"] == d["label"] for p, d in zip(preds, direct, strict=True))
            result[f"fashion-mnist_png_{variant}"] = {
                "n": n_img, "accepted_share": round(accepted / n_img, 4),
                "label_agreement_with_predict": round(agree / n_img, 4)}
    finally:
        await conn.close()
    return result


# --------------------------------------------------------------------------- report
def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    http = report["http"]
    p50 = http["latency"]["p50_ms"]
    ort = report["inprocess"]["batch_images_per_s"]
    batch = http["batch_routes"]["predict_batch"]["images_per_s"]
    rss0, rss1 = report["rss_bytes"]["after_warmup"], report["rss_bytes"]["after_soak"]
    growth = (rss1 - rss0) / rss0
    return {
        "single_image_p50_ms": {"value": p50, "target": f"<= {TARGETS['p50_ms']}", "met": p50 <= TARGETS["p50_ms"]},
        "batch_route_vs_ort": {"value": round(batch / ort, 3), "target": f">= {TARGETS['batch_vs_ort']}",
                               "met": batch / ort >= TARGETS["batch_vs_ort"]},
        "no_5xx_64_clients": {"value": report["soak"]["count_5xx"], "target": "0", "met": report["soak"]["count_5xx"] == 0},
        "rss_growth": {"value": round(growth, 4), "target": f"<= {TARGETS['rss_growth']}",
                       "met": growth <= TARGETS["rss_growth"]},
    }


def print_report(report: dict[str, Any]) -> None:
    ip, http = report["inprocess"], report["http"]
    lines = [
        f"model: {report['model']}  (dataset {report['dataset']}, input {report['input_shape']})",
        f"machine: {report['cpus']} CPUs, load average at start {report['loadavg_start']}",
        f"in-process ORT ({ip['session']}): single image p50 {ip['single_ms_p50']} ms; batch {ip['batch']}: "
        f"{ip['batch_ms']} ms = {ip['batch_images_per_s']} images/s",
        f"in-process ORT ({report['inprocess_default_session']['session']}): single image p50 "
        f"{report['inprocess_default_session']['single_ms_p50']} ms; batch {ip['batch']}: "
        f"{report['inprocess_default_session']['batch_images_per_s']} images/s",
        f"HTTP /predict single image ({http['latency']['requests']} sequential): p50 {http['latency']['p50_ms']} ms, "
        f"p99 {http['latency']['p99_ms']} ms",
        "throughput /predict single image:",
    ]
    for t in http["throughput"]:
        lines.append(f"  {t['clients']:>3} clients: {t['rps']:>8} req/s  p50 {t['p50_ms']} ms  p99 {t['p99_ms']} ms  "
                     f"statuses {t['statuses']}")
    lines.append(f"batch of {ip['batch']} ({http['batch_routes']['predict_batch']['clients']} clients):")
    for name, r in http["batch_routes"].items():
        lines.append(f"  {name:<14} {r['images_per_s']:>8} images/s ({r['images_per_s'] / ip['batch_images_per_s']:.0%}"
                     f" of in-process ORT), body {r['body_bytes']} B, statuses {r['statuses']}")
    s1 = http["batch_route_single_image_32_clients"]
    lines.append(f"/predict_batch, 32 clients x 1 image: {s1['rps']} images/s, p50 {s1['p50_ms']} ms, "
                 f"statuses {s1['statuses']}")
    s = report["soak"]
    lines.append(f"soak {s['clients']} clients {s['seconds']} s: {s['requests']} requests, {s['rps']} req/s, "
                 f"p99 {s['p99_ms']} ms, 5xx {s['count_5xx']}, 429/503 {s['count_429_503']}, "
                 f"conn errors {s['conn_errors']}")
    r = report["rss_bytes"]
    lines.append(f"server RSS: {r['after_warmup'] / 2**20:.1f} MiB after warm-up -> {r['after_soak'] / 2**20:.1f} MiB "
                 f"after soak")
    if "ood" in report:
        pngs = {k: report["ood"].pop(k) for k in list(report["ood"]) if k.startswith("fashion-mnist_png_")}
        for name, o in report["ood"].items():
            lines.append(f"OOD {name}: accepted {o['accepted_share']:.1%} of {o['n']} over HTTP (in-process "
                         f"{o['inprocess_accepted_share']:.1%}; label match {o['label_match']:.1%}), "
                         f"rejections {o['rejection_reasons']}")
        for name, png in pngs.items():
            report["ood"][name] = png
            lines.append(f"{name} uploads (/predict_image): accepted {png['accepted_share']:.1%} of "
                         f"{png['n']}, label agreement with /predict {png['label_agreement_with_predict']:.1%}")
    lines.append("targets:")
    for k, v in report["verdicts"].items():
        lines.append(f"  {k}: {v['value']} (target {v['target']}) -> {'MET' if v['met'] else 'NOT MET'}")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="model.onnx to serve and to run in-process")
    ap.add_argument("--url", default=None, help="use this running server (http://127.0.0.1:PORT) instead")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-clients", type=int, default=2)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    ap.add_argument("--level-seconds", type=float, default=5.0)
    ap.add_argument("--latency-requests", type=int, default=1000)
    ap.add_argument("--soak-seconds", type=float, default=20.0)
    ap.add_argument("--soak-clients", type=int, default=64)
    ap.add_argument("--ood", action="store_true", help="report accepted shares of Fashion-MNIST vs MNIST test images")
    ap.add_argument("--ood-n", type=int, default=10000)
    ap.add_argument("--mnist-dir", default=None)
    ap.add_argument("--oip-model", default="binenc")
    ap.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    art = load_artifact(args.model, providers="CPUExecutionProvider")
    images = sample_images(art, max(args.batch_size, 256))
    report: dict[str, Any] = {"model": str(args.model), "dataset": art.metadata.get("dataset"),
                              "input_shape": list(art.input_shape), "cpus": os.cpu_count(),
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    from serving.predictor import tuned_session

    log.info("in-process ORT (the server's session settings, and the artifact's default session)")
    report["inprocess"] = bench_inprocess(tuned_session(art), images, args.batch_size, repeats=500)
    report["inprocess"]["session"] = (f"server settings: BINENC_ORT_THREADS={os.environ.get('BINENC_ORT_THREADS', '1')}"
                                      ", no spinning")
    report["inprocess_default_session"] = bench_inprocess(art.session, images, args.batch_size, repeats=500)
    report["inprocess_default_session"]["session"] = "load_artifact default (all cores, spinning)"

    home = tempfile.mkdtemp(prefix="binenc-bench-")
    proc = None
    try:
        if args.url:
            host, port = args.url.removeprefix("http://").split(":")
            port = int(port)
        else:
            host, port = "127.0.0.1", free_port()
            log.info("starting bentoml serve on %s:%d", host, port)
            proc = start_server(args.model, port, home)
        report["http"] = asyncio.run(bench_http(host, port, art, images, args))
        report["rss_bytes"] = {"after_warmup": tree_rss(proc.pid) if proc else 0}
        log.info("soak: %d clients for %.0f s", args.soak_clients, args.soak_seconds)
        report["soak"] = asyncio.run(soak(host, port, predict_body(images[:1], art.input_shape[0]),
                                          args.soak_clients, args.soak_seconds))
        report["rss_bytes"]["after_soak"] = tree_rss(proc.pid) if proc else 0
        if args.ood:
            log.info("OOD acceptance over HTTP (%d images each)", args.ood_n)
            report["ood"] = asyncio.run(ood_shares(host, port, art, args.ood_n, args.mnist_dir))
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)
    if proc is not None:
        report["verdicts"] = verdicts(report)
    else:
        report["verdicts"] = {k: v for k, v in verdicts({**report, "rss_bytes": {"after_warmup": 1, "after_soak": 1}})
                              .items() if k != "rss_growth"}
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
