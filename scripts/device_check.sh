#!/usr/bin/env bash
# The first, short call of a GPU session (3 to 8 minutes: compiling dominates), before the grid:
#
#   bash scripts/device_check.sh        (carry .whl; timeout_s 600; results come back in $OUT)
#
# 1. the tests that need a GPU (they skip on the CPU): resuming a run on CUDA, no host sync per batch
#    (CUDA's sync detector), and CUDA graphs (torch.compile mode reduce-overhead) matching eager for
#    every method;
# 2. the throughput benchmark on MODELS (default resnet34), eager and through CUDA graphs, into
#    $OUT/benchmark-cuda-eager.json and $OUT/benchmark-cuda-graphs.json (copy them into results/paper/:
#    chapter 10 shows every stored benchmark);
# 3. the decision (scripts/compile_decision.py): CUDA graphs only if correct for every method and faster,
#    written to $DECISION for the next call's COMPILE=auto, so it can follow at once on the warm machine,
#    and to $OUT/compile-decision.json: commit it as results/paper/compile-decision.json, and later
#    sessions with the same torch version skip this check (COMPILE=auto reads it from the store).
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/dpaat-out}
MODELS=${MODELS:-resnet34}
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:-"--size 224 --images 640 --procs 4"}
DECISION=${DECISION:-/root/dpaat/compile-decision.json}  # read by COMPILE=auto bash scripts/device_grid.sh
mkdir -p "$OUT"
source scripts/device_env.sh

# All of them, not stopping at the first failure: which methods CUDA graphs get right decides COMPILE.
timeout 300 "$PY" -m pytest tests -p no:cacheprovider -q -rA -k "cuda or gpu" 2>&1 | tee "$OUT/cuda-tests.txt" | tail -n 40
for MODE in eager graphs; do
  EXTRA=(); [ "$MODE" = graphs ] && EXTRA=(--compile reduce-overhead)
  timeout 200 "$PY" benchmarks/train_throughput.py --device "$DEVICE" --models $MODELS $BENCH_ARGS "${EXTRA[@]}" \
    --json "$OUT/benchmark-$DEVICE-$MODE.json" 2>&1 | tee "$OUT/benchmark-$MODE.txt" | tail -n 20
done
"$PY" scripts/compile_decision.py "$OUT" --write "$DECISION" | tee "$OUT/compile-decision.txt"
cp "$DECISION" "$OUT/compile-decision.json"
