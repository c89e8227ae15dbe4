#!/usr/bin/env bash
# The paper's regime on a GPU: bin_enc and no_pen on CIFAR-10 with ResNet-18 and the authors' 800-epoch recipe
# (training profile `paper`), then the robustness bench on both (bench profile `paper`). Nothing is downloaded:
# CIFAR10_DIR must hold torchvision's `cifar-10-batches-py/` folder.
#
#   CIFAR10_DIR=/data/cifar10 bash scripts/paper_cifar10.sh            # one GPU
#   CIFAR10_DIR=/data/cifar10 NPROC=4 bash scripts/paper_cifar10.sh    # 4 GPUs, data-parallel (torchrun, NCCL)
#   DRY_RUN=1 CIFAR10_DIR=x bash scripts/paper_cifar10.sh              # print the commands only
#
# DEVICE (default cuda), TRAIN_ARGS and BENCH_ARGS (appended to every training / bench command) shrink it to a
# smoke run; tests/training/test_paper_script.py runs it that way on CPU with a tiny CIFAR-10 in the same format.
# Re-running resumes an interrupted run (--resume) and skips finished ones. SEEDS="0 1 2" for three seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CIFAR10_DIR:?set CIFAR10_DIR to the directory holding cifar-10-batches-py/}"
PY=${PYTHON:-python}
NPROC=${NPROC:-1}
SEEDS=${SEEDS:-0}
RUNS=${RUNS:-runs}
OUT=${OUT:-bench_cifar10_paper}
DEVICE=${DEVICE:-cuda}
read -r -a train_args <<< "${TRAIN_ARGS:-}"
read -r -a bench_args <<< "${BENCH_ARGS:-}"
run() { if [ -n "${DRY_RUN:-}" ]; then echo "$*"; else "$@"; fi; }
launcher=("$PY" -m)
[ "$NPROC" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$NPROC" -m)
evaluate=()
for seed in $SEEDS; do for variant in bin_enc no_pen; do
  out=$RUNS/cifar10_resnet18_paper_${variant}_s${seed}
  evaluate+=(--evaluate "$out")
  [ -f "$out/metrics.json" ] && continue
  if [ -f "$out/checkpoint.pt" ]; then
    run "${launcher[@]}" training --out "$out" --resume --device "$DEVICE" --quiet
  else
    run "${launcher[@]}" training --dataset cifar10 --data-dir "$CIFAR10_DIR" --backbone resnet18 --profile paper \
      --variant "$variant" --seed "$seed" --device "$DEVICE" --out "$out" --quiet "${train_args[@]}"
  fi
done; done
run "${launcher[@]}" robustness.bench --dataset cifar10 --data-dir "$CIFAR10_DIR" --profile paper "${evaluate[@]}" \
  --device "$DEVICE" --no-train --out "$OUT" --quiet "${bench_args[@]}"
