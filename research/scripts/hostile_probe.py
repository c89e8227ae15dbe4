"""Before/after probes of the hostile-client defects against a real `bentoml serve` of a checkout (research/serving-probe/).

Usage: python research/scripts/hostile_probe.py CHECKOUT OUT.json [dos misc metrics auth models cancel]
(CHECKOUT: a worktree of the code to probe; REPEAT=3 repeats the load probes.)"""

# ruff: noqa  (a one-off measurement script, kept as it ran)
import io
import json
import os
import random
import shutil
import socket
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(sys.argv[1]).resolve()
OUT = Path(sys.argv[2])
ITEMS = sys.argv[3:] or ["dos", "metrics", "misc", "auth", "models"]
sys.path.insert(0, str(ROOT / "tests" / "serving"))
from server_util import start_server  # noqa

MODEL = ROOT / "models" / "fashion-mnist_bin_enc" / "model.onnx"
results = json.loads(OUT.read_text()) if OUT.exists() else {}


def save():
    OUT.write_text(json.dumps(results, indent=1))


def env(**kw):
    e = {"PYTHONPATH": str(ROOT), "BINENC_MODEL_PATH": str(MODEL), "BINENC_MODEL_TAG": None}
    e.update({k: v for k, v in kw.items()})
    return e


def tree(pid):
    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    rss = sum(x.memory_info().rss for x in procs)
    thr = max(x.num_threads() for x in procs)
    cpu = sum(sum(x.cpu_times()[:2]) for x in procs)
    return rss / 2**20, thr, cpu


def livez_sampler(url, stop, out):
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                c.get(url + "/livez")
            except httpx.HTTPError:
                pass
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)


def pct(xs, q):
    return round(float(np.percentile(xs, q)), 1) if xs else None


def under_load(url, load, seconds=None):
    stop = threading.Event()
    lat = []
    th = threading.Thread(target=livez_sampler, args=(url, stop, lat))
    th.start()
    time.sleep(0.3)
    n0 = len(lat)
    info = load()
    stop.set()
    th.join()
    lat = lat[n0:]
    return {
        "livez_n": len(lat),
        "livez_p50_ms": pct(lat, 50),
        "livez_p99_ms": pct(lat, 99),
        "livez_max_ms": pct(lat, 100),
        **info,
    }


def jpeg_declaring(side=4096):
    rng = np.random.default_rng(0)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(b, "JPEG")
    d = bytearray(b.getvalue())
    i = d.find(b"\xff\xc0")
    d[i + 5 : i + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
    return bytes(d)


def png_declaring(side=4096):
    b = io.BytesIO()
    Image.new("L", (side, side), 0).save(b, "PNG", optimize=True)
    return b.getvalue()


def dos(url, pid, tag):
    r = {}
    body = b'{"pixels":' + b"[" * 17 + b'"' + b'\\"' * 20000

    def l1():
        t = time.perf_counter()
        resp = httpx.post(
            url + "/predict_batch", content=body, headers={"content-type": "application/json"}, timeout=120
        )
        return {
            "status": resp.status_code,
            "request_s": round(time.perf_counter() - t, 2),
            "body_bytes": len(body),
        }

    r["item1_regex_40KB"] = under_load(url, l1)
    jp = jpeg_declaring()

    def l2a(dur=8.0):
        codes = {}

        def client():
            with httpx.Client(timeout=60) as c:
                end = time.monotonic() + dur
                while time.monotonic() < end:
                    s = c.post(
                        url + "/predict_image", content=jp, headers={"content-type": "image/jpeg"}
                    ).status_code
                    codes[s] = codes.get(s, 0) + 1

        ts = [threading.Thread(target=client) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return {"statuses": codes, "jpeg_bytes": len(jp)}

    r["item2a_4clients_jpeg_4096_declared"] = under_load(url, l2a)
    png = png_declaring()
    files = [("image", (f"{i}.png", png, "image/png")) for i in range(64)]
    rss0, thr0, cpu0 = tree(pid)

    def l2b():
        codes = {}
        t0 = time.perf_counter()

        def client():
            s = httpx.post(url + "/predict_image", files=files, timeout=120).status_code
            codes[s] = codes.get(s, 0) + 1

        ts = [threading.Thread(target=client) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return {
            "statuses": codes,
            "requests_s": round(time.perf_counter() - t0, 2),
            "request_bytes": len(png) * 64,
        }

    out = under_load(url, l2b)
    rss1, thr1, cpu1 = tree(pid)
    time.sleep(5)
    rss2, thr2, cpu2 = tree(pid)
    out.update(
        rss_before_mib=round(rss0),
        rss_after_mib=round(rss1),
        threads_before=thr0,
        threads_after=thr1,
        cpu_s_during=round(cpu1 - cpu0, 1),
        cpu_s_in_5s_after_last_answer=round(cpu2 - cpu1, 1),
        rss_5s_after_mib=round(rss2),
    )
    r["item2b_4x64_png_4096_timeout3"] = out
    return r


def metrics_probe(url, pid, n=4000, headers=None):
    rss0, _, _ = tree(pid)
    rnd = random.Random(0)
    with httpx.Client(timeout=30, headers=headers or {}) as c:
        codes = {}
        for _ in range(n):
            p = "/" + "".join(rnd.choice(string.ascii_lowercase) for _ in range(1000))
            s = c.get(url + p).status_code
            codes[s] = codes.get(s, 0) + 1
        t = time.perf_counter()
        m = c.get(url + "/metrics")
        dt = time.perf_counter() - t
    rss1, _, _ = tree(pid)
    series = sum(1 for line in m.text.splitlines() if line and not line.startswith("#"))
    return {
        "gets": n,
        "statuses": codes,
        "metrics_status": m.status_code,
        "metrics_bytes": len(m.content),
        "series": series,
        "scrape_s": round(dt, 2),
        "rss_before_mib": round(rss0),
        "rss_after_mib": round(rss1),
    }


def misc(url, srv):
    r = {}
    for name, body in {
        "oip_json_2^32x2^32": {
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [4294967296, 4294967296], "data": []}]
        }
    }.items():
        resp = httpx.post(url + "/v2/models/binenc/infer", json=body, timeout=30)
        r["item5_" + name] = {"status": resp.status_code, "body": resp.text[:160]}
    hdr = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "FP32",
                    "shape": [2**62, 4],
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    resp = httpx.post(
        url + "/v2/models/binenc/infer",
        content=hdr,
        headers={
            "inference-header-content-length": str(len(hdr)),
            "content-type": "application/octet-stream",
        },
        timeout=30,
    )
    r["item5_oip_binary_2^62x4"] = {"status": resp.status_code, "body": resp.text[:160]}
    # item 7: MPO
    a = Image.new("L", (28, 28), 0)
    a.paste(255, (8, 8, 20, 20))
    b = Image.new("L", (28, 28), 0)
    buf = io.BytesIO()
    a.save(buf, "MPO", save_all=True, append_images=[b])
    resp = httpx.post(
        url + "/predict_image", files={"image": ("a.jpg", buf.getvalue(), "image/jpeg")}, timeout=30
    )
    r["item7_mpo"] = {"status": resp.status_code, "body": resp.text[:160]}
    resp = httpx.post(
        url + "/predict_image", content=jpeg_declaring(), headers={"content-type": "image/jpeg"}, timeout=30
    )
    r["item8_truncated_jpeg"] = {"status": resp.status_code, "body": resp.text[:160]}
    # item 10: log bytes per invalid /predict_batch
    size0 = srv.log_path.stat().st_size
    for _ in range(20):
        httpx.post(url + "/predict_batch", json={"pixels": [[[[0.5] * 27] * 28]]}, timeout=30)
    r["item10_log_bytes_per_invalid_batch"] = round((srv.log_path.stat().st_size - size0) / 20)
    size0 = srv.log_path.stat().st_size
    for _ in range(20):
        httpx.post(url + "/predict", json={"instances": [[[0.5] * 27] * 28]}, timeout=30)
    r["item10_log_bytes_per_invalid_predict"] = round((srv.log_path.stat().st_size - size0) / 20)
    # CL + TE
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    r["smaller_cl_and_te"] = s.recv(4096).split(b"\r\n", 1)[0].decode()
    s.close()
    card = httpx.get(url + "/model", timeout=30).json()
    r["smaller_model_card_has_geometry"] = "geometry" in card.get("metadata", {})
    return r


def start_timed(extra, timeout=60):
    t = time.perf_counter()
    try:
        srv = start_server(env(**extra), cwd=ROOT, ready_timeout=timeout)
    except RuntimeError as err:
        text = str(err)
        first = text.splitlines()[0]
        lines = [l for l in text.splitlines() if "refusing" in l or "rror" in l]
        return {
            "outcome": first[:80],
            "seconds": round(time.perf_counter() - t, 1),
            "error_lines": len(lines),
            "line": (lines[:1] or [""])[0][-200:],
        }
    out = {"outcome": "serving", "seconds": round(time.perf_counter() - t, 1)}
    try:
        out["GET /model without key"] = httpx.get(srv.url + "/model", timeout=10).status_code
    finally:
        srv.stop()
    return out


def main():
    tmp = Path(tempfile.mkdtemp())
    if (
        "dos" in ITEMS or "metrics" in ITEMS or "misc" in ITEMS
    ) and "item3_metrics_4000_random_paths" not in results:
        srv = start_server(env(BINENC_TIMEOUT_S="3"), cwd=ROOT)
        try:
            pid = srv.proc.pid
            if "dos" in ITEMS:
                for rep in range(int(os.environ.get("REPEAT", "1"))):
                    out = dos(srv.url, pid, "")
                    results.update(out if rep == 0 else {f"{k}_run{rep + 1}": v for k, v in out.items()})
                    save()
            if "misc" in ITEMS:
                results.update(misc(srv.url, srv))
                save()
            if "metrics" in ITEMS:
                results["item3_metrics_4000_random_paths"] = metrics_probe(srv.url, pid)
                save()
        finally:
            srv.stop()
    if "cancel" in ITEMS:
        srv = start_server(env(BINENC_TIMEOUT_S="3", BINENC_MAX_REQUEST_PIXELS=str(2**30)), cwd=ROOT)
        try:
            results["idle_livez_10s"] = under_load(srv.url, lambda: time.sleep(10) or {})
            save()
            for rep in range(2):
                out = dos(srv.url, srv.proc.pid, "")["item2b_4x64_png_4096_timeout3"]
                results[f"item2b_budget_2^30_run{rep + 1}"] = out
                save()
        finally:
            srv.stop()
    if "auth" in ITEMS:
        from serving_hash import sha

        keys = tmp / "keys.txt"
        keys.write_text(sha("k") + "\n")
        srv = start_server(env(BINENC_API_KEYS_FILE=str(keys), BINENC_AUTH_OPEN_PATHS="/readyz"), cwd=ROOT)
        try:
            results["item6_docs_json_open_paths_readyz_only"] = {
                "GET": httpx.get(srv.url + "/docs.json", timeout=10).status_code,
                "HEAD": httpx.head(srv.url + "/docs.json", timeout=10).status_code,
            }
            results["item3_401_series_300"] = metrics_probe(srv.url, srv.proc.pid, n=300, headers={})
            m = httpx.get(srv.url + "/metrics", headers={"authorization": "Bearer k"}, timeout=10)
            results["item3_401_series_300"]["metrics_with_key_series"] = sum(
                1 for l in m.text.splitlines() if l and not l.startswith("#")
            )
        finally:
            srv.stop()
        save()
        empty = tmp / "empty.txt"
        empty.write_text("# no keys yet\n\n")
        results["item4_empty_keys_file"] = start_timed({"BINENC_API_KEYS_FILE": str(empty)})
        save()
        results["item4_key_hashes_comma"] = start_timed({"BINENC_API_KEY_HASHES": ","})
        save()
        results["smaller_timeout_nan"] = start_timed({"BINENC_TIMEOUT_S": "nan"})
        save()
    if "models" in ITEMS:
        data = MODEL.read_bytes()
        bad = {"truncated": data[: len(data) // 2], "corrupt": data[:100] + bytes(200) + data[300:]}
        import onnx

        sys.path.insert(0, str(ROOT))
        m = onnx.load(str(MODEL))
        m.graph.node[0].name += "_x"
        bad["checksum_mismatch"] = m.SerializeToString()
        m = onnx.load(str(MODEL))
        e = m.metadata_props.add()
        e.key = "binenc"
        e.value = "{}"
        bad["two_binenc_entries"] = m.SerializeToString()
        for name, content in [*bad.items(), ("missing", None)]:
            p = tmp / f"{name}.onnx"
            if content is not None:
                p.write_bytes(content)
            results[f"item9_{name}"] = start_timed({"BINENC_MODEL_PATH": str(p)}, timeout=45)
            save()
    shutil.rmtree(tmp, True)


main()
