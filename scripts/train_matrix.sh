#!/usr/bin/env bash
# Trains the Fashion-MNIST cnn quick-profile runs behind docs/results.md: variants x seeds, two at a time
# (one torch thread each, so the two CPU cores are both busy). Re-running skips finished runs.
set -u
cd "$(dirname "$0")/.."
VARIANTS=${VARIANTS:-"bin_enc no_pen lin_pen"}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
DEVICE=${DEVICE:-cpu}
RUNS=${RUNS:-runs}
DATA_DIR=${DATA_DIR:+--data-dir $DATA_DIR}
mkdir -p "$RUNS"
for s in $SEEDS; do for v in $VARIANTS; do
  out=$RUNS/fashion-mnist_cnn_quick_${v}_s${s}
  [ -f "$out/metrics.json" ] && continue
  args=(--dataset fashion-mnist --backbone cnn --profile quick --variant "$v" --seed "$s" --threads 1 --device "$DEVICE" --quiet --out "$out" $DATA_DIR)
  [ -f "$out/checkpoint.pt" ] && args+=(--resume)
  echo "${PYTHON:-python} -m training ${args[*]}"
done; done | xargs -P "$JOBS" -I{} sh -c "{} >> $RUNS/train_matrix.log 2>&1"
