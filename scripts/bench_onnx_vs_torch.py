"""Inference time per image: ONNX Runtime (the artifact) vs PyTorch eager, at batch 1 and 256, in one run.

    python scripts/bench_onnx_vs_torch.py runs/fashion-mnist_cnn_quick_bin_enc_s0 [--threads 1] [--seconds 3]

(exports ``RUN/model.onnx`` first when it is missing or older than the checkpoint).

Both sides compute the same eight outputs (PyTorch: :class:`training.onnx_graph.ScoredModel` under
``torch.inference_mode``; ONNX Runtime: ``Artifact.run`` on the exported ``model.onnx``, including its input
checks and batching) on the same CPU thread budget. Each cell is the median over repeated timed calls after
warm-up; the columns interleave the two engines so background load affects both alike.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from serving.artifact import load_artifact
from training.checkpoint import load_run
from training.export import ensure_artifact
from training.onnx_graph import ScoredModel
from training.reliability import VertexGeometry


def timeit(fn, seconds: float, min_reps: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds over at least ``min_reps`` calls and ~``seconds`` in total."""
    for _ in range(2):
        fn()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per cell")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    path, _ = ensure_artifact(args.run_dir)
    art = load_artifact(path, providers="CPUExecutionProvider", threads=args.threads)
    model, _, _ = load_run(args.run_dir)
    geo = VertexGeometry.from_metadata(art.metadata) if art.metadata["geometry"] else None
    scored = ScoredModel(model, geo).eval()

    print(
        f"{path} ({art.variant}, {art.metadata['backbone']}, input {art.input_shape}); CPU "
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s); torch {torch.__version__}, "
        f"onnxruntime {ort.__version__} ({art.provider})"
    )
    print(f"{'batch':>6s}{'torch eager ms/img':>20s}{'onnxruntime ms/img':>20s}{'speed-up':>10s}")
    rng = np.random.default_rng(0)
    for b in args.batches:
        x = rng.random((b, *art.input_shape), dtype=np.float32)
        xt = torch.from_numpy(x)

        def run_torch(xt=xt):
            with torch.inference_mode():
                return scored(xt)

        def run_ort(x=x, b=b):
            return art.run(x, batch_size=max(b, 1))

        # parity of the timed calls themselves
        ref, got = run_torch(), run_ort()
        assert np.allclose(ref[-1].numpy(), got["reliability"], atol=1e-5)
        t_torch = timeit(run_torch, args.seconds) / b
        t_ort = timeit(run_ort, args.seconds) / b
        print(f"{b:6d}{t_torch * 1e3:20.4f}{t_ort * 1e3:20.4f}{t_torch / t_ort:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
