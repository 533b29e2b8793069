#!/usr/bin/env bash
# Continue the paper grid on a lent GPU for at most BUDGET seconds, then pack the results into $OUT.
# Each call picks up where the last one stopped (finished runs are loaded, unfinished ones resume
# from their last epoch while the machine keeps its files). SHARDS processes share the GPU, each
# with its own models (dpaat grid --shard K/N), because batch 32 leaves one process's GPU mostly idle.
#
#   BUDGET=540 SHARDS=3 DATA=scratch/ham10000 bash scripts/device_grid.sh
set -uo pipefail
BUDGET=${BUDGET:-540}
SHARDS=${SHARDS:-1}
DATA=${DATA:-scratch/ham10000}
RESULTS=${RESULTS:-results/paper}
PY=${PY:-python3}
mkdir -p "$RESULTS"
for k in $(seq 0 $((SHARDS - 1))); do
  "$PY" -m dpaat_lib grid --profile paper --data "$DATA" --results "$RESULTS" --device cuda \
    --time-budget "$BUDGET" --shard "$k/$SHARDS" --no-progress >> "$RESULTS/shard$k.log" 2>&1 &
done
wait
tail -n 3 "$RESULTS"/shard*.log
if [ -n "${OUT:-}" ]; then
  # Everything but checkpoints: metrics, predictions, histories, configs, logs (a few MB).
  tar czf "$OUT/results-paper.tgz" --exclude=ckpt "$RESULTS"
fi
