#!/usr/bin/env bash
# The GPU path check (scripts/gpu_check.py: CUDA training, export, ONNX Runtime's CUDA provider, latency, 2-GPU
# torchrun); on a CPU-only machine it skips the GPU parts and says so. Results: $OUT/gpu_check.json (or --out DIR).
#
#   scripts/gpu_check.sh [gpu_check.py options]              # the environment of $PYTHON, .venv or python3
#   FRESH_VENV=DIR scripts/gpu_check.sh [options]             # first build a fresh venv in DIR with .[train]
#
# WHEEL_DIR=DIR installs from local wheels only (machines without a package index); it is also passed on as
# --wheel-dir for the onnxruntime / onnxruntime-gpu swap.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_sources=()
if [[ -n "${WHEEL_DIR:-}" ]]; then
    pip_sources=(--no-index --find-links "$WHEEL_DIR")
    set -- --wheel-dir "$WHEEL_DIR" "$@"
fi

if [[ -n "${FRESH_VENV:-}" ]]; then
    python3 -m venv "$FRESH_VENV"
    "$FRESH_VENV/bin/pip" install -q "${pip_sources[@]}" -e ".[train]"
    PYTHON="$FRESH_VENV/bin/python"
fi

if [[ -z "${PYTHON:-}" ]]; then
    for candidate in .venv/bin/python python3; do
        if "$candidate" -c "import torch, onnxruntime" 2>/dev/null; then PYTHON=$candidate; break; fi
    done
fi
if [[ -z "${PYTHON:-}" ]]; then
    echo "error: no Python with torch and onnxruntime; set PYTHON=... or FRESH_VENV=DIR" >&2
    exit 2
fi

exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" scripts/gpu_check.py "$@"
