"""Measure the serving process tree's resident memory (RSS), to size a container's memory request and limit.

    python scripts/serving_rss.py --model models/fashion-mnist_bin_enc/model.onnx [--workers 1,2] [--out FILE.json]

For each worker count: ``bentoml serve`` (BentoML's arbiter + N workers) is started; RSS of the whole tree is read
once ready (idle), then sampled every 50 ms while the server answers requests at its caps (``/predict`` batches of
``BINENC_MAX_BATCH`` = 256 images, ``/predict_image`` with 16 PNG uploads, ``/predict_batch``, single images);
the peak and the RSS after the load are reported.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import Served  # noqa: E402

MIB = 2**20


def tree_rss(pid: int) -> tuple[int, list[int]]:
    proc = psutil.Process(pid)
    parts = [p.memory_info().rss for p in [proc, *proc.children(recursive=True)]]
    return sum(parts), parts


def load(url: str, rounds: int) -> int:
    rng = np.random.default_rng(0)
    big = {"instances": rng.integers(0, 256, (256, 28, 28)).tolist(), "pixel_range": "0-255"}
    batch = {"pixels": rng.random((64, 1, 28, 28), dtype=np.float32).round(3).tolist()}
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, format="PNG")
    files = [("image", (f"{i}.png", buf.getvalue(), "image/png")) for i in range(16)]
    single = {"instances": rng.integers(0, 256, (1, 28, 28)).tolist(), "pixel_range": "0-255"}
    n = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(rounds):
            for r in (
                c.post("/predict", json=big),
                c.post("/predict_batch", json=batch),
                c.post("/predict_image", files=files),
                *(c.post("/predict", json=single) for _ in range(20)),
            ):
                r.raise_for_status()
                n += 1
    return n


def measure(model: Path, workers: int, rounds: int) -> dict:
    server = Served(model, workers)
    try:
        time.sleep(2)
        idle, parts = tree_rss(server.proc.pid)
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(server.proc.pid)[0])
                time.sleep(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        requests = load(f"http://127.0.0.1:{server.port}", rounds)
        done.set()
        t.join()
        after, _ = tree_rss(server.proc.pid)
        return {
            "workers": workers,
            "requests": requests,
            "idle_mib": round(idle / MIB, 1),
            "idle_per_process_mib": [round(p / MIB, 1) for p in parts],
            "peak_mib": round(peak[0] / MIB, 1),
            "after_mib": round(after / MIB, 1),
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2])
    ap.add_argument("--rounds", type=int, default=30, help="rounds of the request mix per worker count")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"error: no model file {args.model}", file=sys.stderr)
        return 2
    rows = []
    for w in args.workers:
        row = measure(args.model, w, args.rounds)
        print(json.dumps(row))
        rows.append(row)
    report = {
        "command": "python scripts/serving_rss.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_count": psutil.cpu_count(),
        "loadavg": [round(v, 2) for v in psutil.getloadavg()],
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
