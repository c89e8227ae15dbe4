"""GPU path check: CUDA training, export, ONNX Runtime's CUDA provider, latency side by side, 2-GPU torchrun.

    scripts/gpu_check.sh [--out DIR] [--dataset NAME] [--epochs N] [--wheel-dir DIR] [--keep-ort-gpu]

On a machine with a CUDA GPU it
1. swaps ``onnxruntime`` for ``onnxruntime-gpu`` of the same version in this interpreter's environment (both wheels
   are obtained first, from ``--wheel-dir`` or the package index, so the environment never holds both and can
   always be swapped back; it is swapped back at the end unless ``--keep-ort-gpu``);
2. trains a short ``--device cuda`` run (``fashion-mnist`` if its files are present, else ``digits``) with
   ``python -m training ... --export``;
3. loads the artifact with ``providers="auto"`` and records the provider the loader reports;
4. times ORT CUDA, ORT CPU, torch CUDA and torch CPU per image at batch 1 and 256, interleaved, ratios printed;
5. if two GPUs exist, trains the same run with ``torchrun --nproc_per_node 2`` and records both epoch times.

On a CPU-only machine it says which GPU parts it skips and runs the rest on the CPU (a dry run of the script).
Everything goes to ``gpu_check.json`` in ``--out`` (default ``$OUT``, else ``gpu_check_out/``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, flush=True)


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch_wheel(name: str, version: str, wheel_dir: Path | None, into: Path) -> Path | None:
    """A wheel of ``name==version`` for this interpreter, from ``wheel_dir`` or the package index."""
    sources = ["--no-index", "--find-links", str(wheel_dir)] if wheel_dir else []
    done = pip(
        "download", "--no-deps", "--only-binary=:all:", "-d", str(into), *sources, f"{name}=={version}"
    )
    stem = name.replace("-", "_")
    found = sorted(into.glob(f"{stem}-{version}-*.whl"))
    return found[0] if done.returncode == 0 and found else None


def swap_ort(to_gpu: bool, wheels: dict[str, Path]) -> None:
    """Replace one onnxruntime distribution by the other (uninstall first: never both installed)."""
    old, new = ("onnxruntime", "onnxruntime-gpu") if to_gpu else ("onnxruntime-gpu", "onnxruntime")
    for args in (("uninstall", "-y", old), ("install", "--no-deps", "--no-index", str(wheels[new]))):
        done = pip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"pip {' '.join(args)} failed: {done.stderr[-2000:]}")


def prepare_ort_gpu(args, report: dict, tmp: Path) -> dict[str, Path] | None:
    """Swap in onnxruntime-gpu when a GPU exists; the wheels to swap back, or None when nothing was swapped."""
    cpu_v, gpu_v = installed("onnxruntime"), installed("onnxruntime-gpu")
    report["onnxruntime_before"] = {"onnxruntime": cpu_v, "onnxruntime-gpu": gpu_v}
    if gpu_v:
        report["ort_swap"] = f"onnxruntime-gpu {gpu_v} already installed"
        return None
    if not cpu_v:
        report["ort_swap"] = "skipped: neither onnxruntime nor onnxruntime-gpu is installed"
        return None
    wheels = {
        "onnxruntime": fetch_wheel("onnxruntime", cpu_v, args.wheel_dir, tmp),
        "onnxruntime-gpu": fetch_wheel("onnxruntime-gpu", cpu_v, args.wheel_dir, tmp),
    }
    missing = [k for k, v in wheels.items() if v is None]
    if missing:
        report["ort_swap"] = (
            f"skipped: no wheel of {', '.join(missing)}=={cpu_v} reachable (pass --wheel-dir with "
            "both wheels); the CUDA provider was not tried"
        )
        return None
    swap_ort(True, wheels)
    report["ort_swap"] = f"onnxruntime {cpu_v} -> onnxruntime-gpu {cpu_v}"
    return wheels


# Short runs that still give every class a vertex (the export needs one): the quick cnn on Fashion-MNIST, and the
# test suite's recipe on the 8x8 digits (the quick profile's gamma cap collapses this tiny set).
RECIPES = {
    "fashion-mnist": ["--backbone", "cnn", "--epochs", "2"],
    "digits": [
        "--backbone",
        "mlp",
        "--epochs",
        "30",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--head-lr",
        "3e-3",
        "--gamma-cap",
        "10",
    ],
}


def train_cmd(
    nproc: int, device: str, dataset: str, epochs: int | None, out: Path, export: bool
) -> list[str]:
    launcher = (
        [sys.executable]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    )
    cmd = [
        *launcher,
        "-m",
        "training",
        "--device",
        device,
        "--dataset",
        dataset,
        *RECIPES.get(dataset, []),
        "--out",
        str(out),
        "--quiet",
    ]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    return [*cmd, "--export"] if export else cmd


def run_training(cmd: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    rows = (
        [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        if done.returncode == 0
        else []
    )
    result = {
        "command": " ".join(cmd),
        "returncode": done.returncode,
        "wall_s": time.perf_counter() - t0,
        "epoch_time_s": [r["epoch_time_s"] for r in rows],
        "stdout_tail": done.stdout[-1500:],
    }
    if done.returncode != 0:
        result["stderr_tail"] = done.stderr[-3000:]
    return result


def interleaved_medians(fns: dict, x, seconds: float, rounds: int = 4) -> dict[str, float]:
    """Median seconds per call of each function on ``x``: ``rounds`` rounds of ~``seconds / rounds`` each, the
    engines taking turns, so that background load affects all alike."""
    import numpy as np

    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(x), fn(x)  # warm-up
    for r in range(rounds):
        names = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in names:
            t_end = time.perf_counter() + seconds / rounds
            while True:
                t0 = time.perf_counter()
                fns[name](x)
                samples[name].append(time.perf_counter() - t0)
                if time.perf_counter() >= t_end:
                    break
    return {name: float(np.median(v)) for name, v in samples.items()}


def torch_engine(run_dir: Path, geometry, device: str):
    """The export's torch module (same eight outputs as the artifact) on ``device``; inputs and outputs on the host,
    as with ONNX Runtime."""
    import torch

    from training.checkpoint import load_run
    from training.onnx_graph import ScoredModel

    net = ScoredModel(load_run(run_dir)[0], geometry).eval().to(device)

    def fn(x):
        with torch.inference_mode():
            out = [t.cpu() for t in net(torch.from_numpy(x).to(device))]
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    return fn


def engines(run_dir: Path, cuda: bool) -> tuple[dict, str, tuple[int, ...]]:
    """name -> callable(float32 pixels) for every engine this machine has, the provider that ``providers="auto"``
    got, and the input shape."""
    import onnxruntime as ort

    from serving.artifact import load_artifact
    from training.reliability import VertexGeometry

    if cuda and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA / cuDNN from the nvidia-* wheels torch brought along
    auto = load_artifact(run_dir / "model.onnx", providers="auto")
    cpu = load_artifact(run_dir / "model.onnx", providers="CPUExecutionProvider")
    geo = VertexGeometry.from_metadata(cpu.metadata) if cpu.score_name == "vertex_distance" else None
    found = {
        "ort_cpu": lambda x: cpu.run(x, batch_size=len(x)),
        "torch_cpu": torch_engine(run_dir, geo, "cpu"),
    }
    if auto.provider == "CUDAExecutionProvider":
        found["ort_cuda"] = lambda x: auto.run(x, batch_size=len(x))
    if cuda:
        found["torch_cuda"] = torch_engine(run_dir, geo, "cuda")
    return found, auto.provider, cpu.input_shape


def latency(run_dir: Path, cuda: bool, seconds: float) -> dict:
    """Per-image milliseconds of each engine at batch 1 and 256, engines interleaved per batch size."""
    import numpy as np

    fns, provider, shape = engines(run_dir, cuda)
    out: dict = {"provider_reported_by_loader": provider, "ms_per_image": {}, "ratios": {}}
    rng = np.random.default_rng(0)
    for b in (1, 256):
        x = rng.random((b, *shape), dtype=np.float32)
        cell = {name: 1e3 * t / b for name, t in interleaved_medians(fns, x, seconds).items()}
        out["ms_per_image"][str(b)] = cell
        ratios = {f"ort_cpu/{k}": cell["ort_cpu"] / cell[k] for k in ("ort_cuda", "torch_cuda") if k in cell}
        if "ort_cuda" in cell and "torch_cuda" in cell:
            ratios["torch_cuda/ort_cuda"] = cell["torch_cuda"] / cell["ort_cuda"]
        ratios["torch_cpu/ort_cpu"] = cell["torch_cpu"] / cell["ort_cpu"]
        out["ratios"][str(b)] = ratios
        log(f"batch {b:3d}: " + ", ".join(f"{k} {v:.4f} ms/img" for k, v in cell.items()))
        log("          " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    return out


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_runtime": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    p.add_argument("--dataset", help="default: fashion-mnist if its files are present, else digits")
    p.add_argument("--epochs", type=int, help="default: 2 on fashion-mnist, 30 on digits")
    p.add_argument("--seconds", type=float, default=2.0, help="time budget per engine and batch size")
    p.add_argument("--wheel-dir", type=Path, help="directory holding onnxruntime and onnxruntime-gpu wheels")
    p.add_argument("--keep-ort-gpu", action="store_true", help="leave onnxruntime-gpu installed at the end")
    p.add_argument("--no-ort-swap", action="store_true", help="use the installed onnxruntime as it is")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(), "skipped": []}
    env = report["environment"]
    cuda = env["cuda_available"]
    log(f"environment: {json.dumps(env)}")
    if not cuda:
        report["skipped"] += [
            "onnxruntime-gpu swap",
            "--device cuda training (ran on cpu)",
            "ORT CUDA and torch CUDA latency",
            "2-GPU torchrun",
        ]
        log("no CUDA GPU: skipping " + "; ".join(report["skipped"]))
    with tempfile.TemporaryDirectory() as tmp:
        wheels = prepare_ort_gpu(args, report, Path(tmp)) if cuda and not args.no_ort_swap else None
        try:
            check(args, report, cuda)
        finally:
            if wheels and not args.keep_ort_gpu:
                swap_ort(False, wheels)
                report["ort_swap"] += " -> onnxruntime (restored)"
    report["onnxruntime_after"] = {
        "onnxruntime": installed("onnxruntime"),
        "onnxruntime-gpu": installed("onnxruntime-gpu"),
    }
    path = args.out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {path}")
    return 0 if report.get("training", {}).get("returncode") == 0 else 1


def check(args, report: dict, cuda: bool) -> None:
    """Training, export, provider and latency (and the 2-GPU run) into ``report``."""
    from training.data import DatasetNotFoundError, load_raw

    dataset = args.dataset
    if dataset is None:
        try:
            load_raw("fashion-mnist")
            dataset = "fashion-mnist"
        except DatasetNotFoundError:
            dataset = "digits"
    device = "cuda" if cuda else "cpu"
    run_dir = args.out / f"{dataset}_{device}"
    report["dataset"] = dataset
    log(f"training {dataset} on {device} ...")
    report["training"] = run_training(
        train_cmd(1, device, dataset, args.epochs, run_dir, export=True), run_dir
    )
    if report["training"]["returncode"] != 0:
        log(report["training"].get("stderr_tail", ""))
        return
    report["latency"] = latency(run_dir, cuda, args.seconds)
    log(f"loader reports provider {report['latency']['provider_reported_by_loader']}")
    if cuda and len(report["environment"]["gpus"]) >= 2:
        ddp_dir = args.out / f"{dataset}_cuda_2gpu"
        log("2-GPU torchrun ...")
        report["training_2gpu"] = run_training(
            train_cmd(2, "cuda", dataset, args.epochs, ddp_dir, False), ddp_dir
        )
        one, two = report["training"]["epoch_time_s"], report["training_2gpu"]["epoch_time_s"]
        if one and two:
            report["epoch_time_ratio_1gpu_over_2gpu"] = min(one) / min(two)
            log(
                f"epoch time 1 GPU {min(one):.2f} s, 2 GPUs {min(two):.2f} s: ratio {min(one) / min(two):.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
