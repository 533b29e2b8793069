#!/usr/bin/env bash
# The first, short call of a GPU session (3 to 9 minutes, LIMIT: compiling dominates), before the grid:
#
#   bash scripts/device_check.sh        (carry .whl; timeout_s 600; results come back in $OUT)
#
# 1. the tests that need a GPU (they skip on the CPU): resuming a run on CUDA, no host sync per batch
#    (CUDA's sync detector), and CUDA graphs matching eager for every method, both the library's own graph
#    of each training step (cuda-graph) and torch.compile's (mode reduce-overhead);
# 2. the throughput benchmark on MODELS (default resnet34), eager and through each kind of CUDA graph, into
#    $OUT/benchmark-cuda-eager.json, -captured.json and -graphs.json (copy them into results/paper/:
#    chapter 10 shows every stored benchmark);
#    torch.compile's part is left out when the library's graph is already correct and GOOD_ENOUGH (1.5: what
#    torch.compile's graphs gained on the H200) times eager with 4 processes sharing the card, as the grid runs
#    (CHECK_COMPILED=1 measures it anyway); the benchmarks run under MPS where the machine has it, as the grid;
# 3. the decision (scripts/compile_decision.py): a graph mode only if correct for every method and faster
#    (of two such, the one whose typical run costs the card fewer seconds with several processes sharing it,
#    warm-up included),
#    written to $DECISION for the next call's COMPILE=auto, so it can follow at once on the warm machine,
#    and to $OUT/compile-decision.json: commit it as results/paper/compile-decision.json, and later
#    sessions with the same torch version and training code skip this check (COMPILE=auto reads it).
set -uo pipefail
START=$(date +%s)
LIMIT=${LIMIT:-540}  # seconds for the whole check: each step is cut to what is left, the decision always runs
PY=${PY:-python3}
OUT=${OUT:-/tmp/dpaat-out}
MODELS=${MODELS:-resnet34}
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:-"--size 224 --images 640 --procs 4"}
DECISION=${DECISION:-/root/dpaat/compile-decision.json}  # read by COMPILE=auto bash scripts/device_grid.sh
mkdir -p "$OUT"
source scripts/device_env.sh
cap() {  # $1 seconds, or what is left of LIMIT less 20 s for the decision, whichever is less (at least 1)
  local left=$(( LIMIT - 20 - ($(date +%s) - START) ))
  [ "$left" -lt "$1" ] && set -- "$left"
  [ "$1" -lt 1 ] && set -- 1
  echo "$1"
}
bench() {  # $1: eager | captured (the library's graph) | graphs (torch.compile's)
  local extra=()
  [ "$1" = captured ] && extra=(--compile cuda-graph)
  [ "$1" = graphs ] && extra=(--compile reduce-overhead)
  timeout "$(cap 200)" "$PY" benchmarks/train_throughput.py --device "$DEVICE" --models $MODELS $BENCH_ARGS \
    "${extra[@]}" --json "$OUT/benchmark-$DEVICE-$1.json" 2>&1 | tee "$OUT/benchmark-$1.txt" | tail -n 20
}

# Every test, not stopping at the first failure: which methods each mode gets right decides COMPILE. The
# library's graph first (it captures in about a step), torch.compile's last (it compiles for minutes): a check
# cut short still decides on what it measured.
K_COMPILED="test_cuda_graphs_match_eager_on_a_gpu"
# -v: each test's PASSED line as it ends (-rA's summary alone would be lost with a step its timeout cuts short).
timeout "$(cap 180)" "$PY" -m pytest tests -p no:cacheprovider -o addopts= -v -rA \
  -k "(cuda or gpu) and not $K_COMPILED" \
  2>&1 | tee "$OUT/cuda-tests.txt" | tail -n 40
# The benchmarks under MPS where the machine has it, as the grid's workers run (scripts/device_env.sh): the decision
# weighs the modes by several processes sharing the card, and on the H200 those took turns (no MPS in the check).
mps_start
bench eager
bench captured
# The library's graph already correct and GOOD_ENOUGH times eager as the grid runs (4 processes): torch.compile's
# minutes go to the grid instead
# (its warm-up compiles for minutes in every process; CHECK_COMPILED=1 measures it anyway).
if [ "${CHECK_COMPILED:-0}" != 1 ] \
  && "$PY" scripts/compile_decision.py "$OUT" --good-enough cuda-graph "${GOOD_ENOUGH:-1.5}"; then
  echo "torch.compile's CUDA graphs not measured: the library's graph is correct and fast enough"
else
  timeout "$(cap 300)" "$PY" -m pytest tests -p no:cacheprovider -o addopts= -v -rA -k "$K_COMPILED" 2>&1 \
    | tee -a "$OUT/cuda-tests.txt" | tail -n 20
  bench graphs
fi
mps_stop
echo "[check: $(( $(date +%s) - START )) s of LIMIT=$LIMIT]"
"$PY" scripts/compile_decision.py "$OUT" --write "$DECISION" | tee "$OUT/compile-decision.txt"
cp "$DECISION" "$OUT/compile-decision.json"
