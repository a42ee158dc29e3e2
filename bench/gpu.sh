#!/usr/bin/env bash
# The GPU benchmark: run it whenever a GPU is lent (about 4-5 minutes on one H200).
#
#   bash bench/gpu.sh [CONFIG]            # CONFIG defaults to configs/dir_reference.py
#
# For float32 (JAX's default precision: TF32 allowed) and bfloat16, factored and dense plane fusion,
# each in its own process (bench/train_throughput.py): train images/s at batch 64, train-step compile
# time, forward latency at batch 1 and 64, the process's peak device memory and XLA's FLOP count; then
# the host input pipeline's images/s per core (bench/input_pipeline.py, about 1 minute).
# The four processes compile at the same time (the train step alone compiles for 100-130 s on an H200
# machine) and take turns to time, under one lock file; memory is allocated on demand so that each
# process's peak is its own. Rows for docs/benchmarks.md go to $ROWS (default: $OUT/gpu_rows.md when
# OUT is set, else outputs/bench/gpu_rows.md); each variant's log to stdout when it ends. A variant that
# fails or runs past $VARIANT_TIMEOUT seconds is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/dir_reference.py}
PY=${PYTHON:-python3}
ROWS=${ROWS:-${OUT:-outputs/bench}/gpu_rows.md}
VARIANT_TIMEOUT=${VARIANT_TIMEOUT:-420}
LOGS=$(mktemp -d)
mkdir -p "$(dirname "$ROWS")"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi: not available'
"$PY" -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
{
  echo "GPU benchmark, $CONFIG, $(date -u +%Y-%m-%d)"
  echo
  echo '| dtype | fusion | train images/s (batch 64) | train step ms | train compile s | forward ms, batch 1 | forward ms, batch 64 | peak device GB | XLA GFLOP per trained image |'
  echo '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
} >> "$ROWS"
for dtype in float32 bfloat16; do
  for fusion in factored dense; do
    ( timeout "$VARIANT_TIMEOUT" "$PY" bench/train_throughput.py --config "$CONFIG" --dtype "$dtype" --fusion "$fusion" \
        --train_batch 64 --forward_batches 1,64 --steps 20 --rows "$ROWS" --timing_lock "$LOGS/lock" \
        > "$LOGS/$dtype-$fusion.log" 2>&1 \
      || echo "| $dtype | $fusion | failed or timed out (exit $?) |" >> "$ROWS"
      echo "== $dtype, $fusion fusion"; grep -v '^W[0-9]\{4\}\|Warning\|warn(' "$LOGS/$dtype-$fusion.log" ) &
  done
done
wait
# The host side of the same machine: images/s per core of the lean stream (what the hosts do when the
# train step augments on the device) and of the host-augmented stream, plus bytes per example.
echo "== host input pipeline"
timeout 300 "$PY" bench/input_pipeline.py --examples 48 --batch 32 --seconds 2 --rounds 2 2>&1 \
  | grep -v '^W[0-9]\{4\}\|^I[0-9]\{4\}\|Warning\|warn(\|Generating\|Shuffling' | tee "$LOGS/host.log"
{
  echo
  echo "Host input pipeline on the same machine ($(nproc) cores): $(grep -E '^  (train|lean) ' "$LOGS/host.log" | tr -s ' ' | paste -sd ';' -)"
  tail -2 "$LOGS/host.log"
} >> "$ROWS"
cat "$ROWS"
