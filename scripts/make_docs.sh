#!/usr/bin/env bash
# Regenerate the default runs' figures in docs/ that 2 CPU cores can reproduce, then list those that need a GPU.
# (research/, the regime sweep and adversarial training, states each figure's own command beside it; its runs train
# again from research/runs/NAME/config.json with `python -m training --config`.)
#   make docs                 (or: bash scripts/make_docs.sh; PYTHON=... to pick the interpreter)
# Trains the four default quick runs that are missing (~15-45 min each on 2 CPU cores), then rewrites:
#   docs/runs/NAME/{config,metrics}.json(l)   the run metrics docs/results.md cites
#   docs/ood_eval_s0.json                      docs/reliability.md (served score vs detectors, intervals)
#   docs/example-report/                       docs/robustness.md (robustness bench, default mode)
#   docs/serving_bench.json                    docs/serving.md (latency ratio, load, OOD shares over HTTP)
#   models/fashion-mnist_bin_enc/              the shipped model and its provenance (make model)
#   docs/shipped-model-guarantee.json          docs/shipped-model.md (its certified risk checked on test)
# and prints the training table of docs/results.md. Markdown prose quoting these numbers is edited by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
step() { printf '\n== %s\n' "$*"; }

for v in bin_enc no_pen lin_pen nonlin_pen; do
  run=$RUNS/fashion-mnist_cnn_quick_${v}_s0
  if [ ! -f "$run/metrics.json" ]; then
    step "train $run"
    resume=(); [ -f "$run/checkpoint.pt" ] && resume=(--resume)
    "$PY" -m training --dataset fashion-mnist --variant "$v" --profile quick --out "$run" --quiet "${resume[@]}"
  fi
  mkdir -p "docs/runs/$(basename "$run")"
  cp "$run/config.json" "$run/metrics.json" "$run/metrics.jsonl" "docs/runs/$(basename "$run")/"
done

step "training table (docs/results.md)"
"$PY" scripts/results_table.py --runs docs/runs --seeds 0

step "shipped model (models/fashion-mnist_bin_enc; seed 1, chosen on validation: docs/shipped-model.md)"
shipped=$RUNS/fashion-mnist_cnn_quick_bin_enc_s1
if [ ! -f "$shipped/metrics.json" ]; then
  resume=(); [ -f "$shipped/checkpoint.pt" ] && resume=(--resume)
  "$PY" -m training --dataset fashion-mnist --variant bin_enc --profile quick --seed 1 --out "$shipped" --quiet "${resume[@]}"
fi
"$PY" scripts/ship_model.py --run "$shipped"
"$PY" -m robustness.guarantee models/fashion-mnist_bin_enc/model.onnx --json docs/shipped-model-guarantee.json

step "OOD and misclassification figures (docs/ood_eval_s0.json)"
"$PY" scripts/ood_eval.py "$RUNS/fashion-mnist_cnn_quick_bin_enc_s0" \
  --baseline "$RUNS/fashion-mnist_cnn_quick_no_pen_s0" --threads 1 --json docs/ood_eval_s0.json

step "robustness bench (docs/example-report)"
"$PY" -m robustness.bench --runs-dir "$RUNS" --out docs/example-report

step "serving benchmark (docs/serving_bench.json)"
model=models/fashion-mnist_bin_enc/model.onnx
"$PY" scripts/bench_serving.py latency --model "$model" --out docs/serving_bench.json
"$PY" scripts/bench_serving.py load --model "$model" --out docs/serving_bench.json
"$PY" scripts/bench_serving.py ood --model "$model" --out docs/serving_bench.json

step "ONNX Runtime vs PyTorch speed (docs/reliability.md)"
"$PY" scripts/bench_onnx_vs_torch.py "$RUNS/fashion-mnist_cnn_quick_bin_enc_s0" --threads 1

step "epoch time at 1 and 2 processes (docs/distributed.md)"
"$PY" scripts/bench_scaling.py --dataset fashion-mnist --backbone cnn --steps 40 --epochs 3 --rounds 2

cat <<'TXT'

== figures that need a GPU (not regenerated here)
- research/quick-profile.md: the schedule sweep (python -m research.scripts.quick_profile_sweep --round 1|2 --device cuda --jobs 16)
- docs/results.md: the three-seed table (bash scripts/train_matrix.sh with DEVICE=cuda, then scripts/results_table.py --seeds 0 1 2)
- docs/distributed.md: the GPU check (bash scripts/gpu_check.sh on a GPU machine)
TXT
