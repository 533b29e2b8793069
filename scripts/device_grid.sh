#!/usr/bin/env bash
# One call on a lent GPU: continue a profile's book grid for at most LIMIT seconds, then pack the results.
#
#   LIMIT=555 WORKERS=auto BENCH=1 DATA=scratch/ham-gpu bash scripts/device_grid.sh   (data: dpaat slim-copy)
#
# - installs the wheels carried in .whl/ (grad-cam, ttach, torchattacks) when the machine lacks them;
# - decodes the profile's images once (dpaat prepare), before the workers start;
# - BENCH=1: benchmarks/train_throughput.py first (paper-style loop vs library path vs 4 processes,
#   and the cost of each method relative to STD; BENCH_ARGS sets its size), into
#   $RESULTS/benchmark-$DEVICE.json (packed);
# - MPS=1 (default): starts NVIDIA's multi-process service when the machine has it, so the workers'
#   small kernels run side by side (checked with a tiny CUDA program; switched off if that fails);
# - WORKERS=auto (default): 8, except on a last call (FINAL=1), where `dpaat grid --workers-for` picks 8, 4, 2
#   or 1 so that the runs expected to finish before the call ends do the most of the grid (fewer processes
#   make each run faster: the runs too long for a full card go when nothing shorter is left);
# - WORKERS processes run `dpaat grid --book --claim` together: each takes the next unclaimed run
#   (STD runs first, AMAT once its STD is done), and right after a run computes what the book derives
#   from its checkpoint (--extras: eps curves, stronger attacks, Grad-CAM), because checkpoints do
#   not outlive the machine. No run is started or continued after TRAIN_END seconds (resumable);
#   everything is stopped at LIMIT - 20 s. A finished run whose extras are missing and whose
#   checkpoint is gone is trained again (--retrain-lost-extras; its old folder goes to superseded/);
# - FINAL=1 marks the session's last call (the machine, with every unfinished run's checkpoint, then
#   goes back): a run is started only if it is expected to finish, extras included, before the call
#   ends (--finish-by, estimated from the runs already stored), and training may go on to the end;
# - NEXT (with FINAL=1; default 0): the LIMIT of one more call that will follow at once on this machine while it is
#   still warm (the device tool keeps it about 30 s): a run may also start if it is expected to finish within what
#   that call leaves a run (NEXT less NEXT_OVERHEAD, 65 s: preparing the data and choosing the processes, about
#   40 s, and its last 25 s), its checkpoint staying in $RESULTS for that call, which continues it (a session's
#   second call, README "On a GPU"). A run so started is lost if the machine goes back first;
# - appends the call (seconds, card, workers, runs trained) to $RESULTS/calls.jsonl (a call stopped early leaves
#   its record so far in $RESULTS/logs/call-$START.json instead, packed with the partial archive);
# - every PACK_EVERY seconds (default 60) while the workers run, packs the runs finished so far (with their logs)
#   into $OUT/results-$PROFILE-$START.partial.tgz: the device tool may stop a call before LIMIT (its limit is
#   less than timeout_s when the machine's start took long), and what was finished then still comes back;
#   the final archive replaces it;
# - packs what was written to the results store since the last call on this machine that packed its final
#   archive whole (a call stopped early is made up for by the next), finished runs only (no checkpoints, no run
#   still training or trained again and unfinished), logs included, into $OUT/results-$PROFILE-$START.tgz,
#   split into parts of 15 MiB if larger (the device tool brings back files of at most 16 MiB): unpack the
#   calls' archives in order with scripts/unpack_results.py, which replaces each run folder they hold.
# COMPILE=reduce-overhead trains through torch.compile (CUDA graphs; run ids unchanged); COMPILE=auto takes
# what scripts/device_check.sh decided on this machine, else the decision committed to the store
# ($RESULTS/compile-decision.json) if it was taken under this torch version and training code, else eager.
# Extra arguments for the workers (e.g. --seeds 0 1 2, --set eta=0.25) go in GRID_ARGS. Keep RESULTS
# outside the paths a call carries (the device tool replaces those), so a warm machine keeps the
# checkpoints of unfinished runs from one call to the next.
set -uo pipefail
START=$(date +%s)
LIMIT=${LIMIT:-570}
WORKERS=${WORKERS:-auto}
DATA=${DATA:-scratch/ham-gpu}
PROFILE=${PROFILE:-paper}
RESULTS=${RESULTS:-results/$PROFILE}
BENCH=${BENCH:-0}
BENCH_ARGS=${BENCH_ARGS:-"--size 224 --images 1280 --procs 4 --cost-model resnet34"}
MPS=${MPS:-1}
EXTRAS_RESERVE=${EXTRAS_RESERVE:-90}
FINAL=${FINAL:-0}
NEXT=${NEXT:-0}
NEXT_OVERHEAD=${NEXT_OVERHEAD:-65}
NEXT_TRAIN=$(( NEXT > NEXT_OVERHEAD ? NEXT - NEXT_OVERHEAD : 0 ))  # what the next call leaves a run
GRID_ARGS=${GRID_ARGS:-}
COMPILE=${COMPILE:-}
PY=${PY:-python3}
PACK_EVERY=${PACK_EVERY:-60}
if [ "$COMPILE" = auto ]; then  # what scripts/device_check.sh decided, on this machine or committed to the store
  COMPILE=$("$PY" scripts/compile_decision.py --read "${DECISION:-/root/dpaat/compile-decision.json}" \
    "$RESULTS/compile-decision.json" | tr -d '[:space:]')
  echo "COMPILE=auto: ${COMPILE:-eager}"
fi
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/dpaat-out}
mkdir -p "$OUT" "$RESULTS/logs"
MARK=$(mktemp /tmp/dpaat-call-start.XXXXXX)  # a name for this call's file lists
elapsed() { echo $(( $(date +%s) - START )); }
source scripts/device_env.sh
BASE=$(dirname "$RESULTS") NAME=$(basename "$RESULTS")
PARTIAL="$OUT/results-$PROFILE-$START.partial.tgz"
# Packed: what was written since the end of the last call on this machine whose final archive was written whole
# (or since the first call began), so a call the device tool stopped early loses nothing it finished after its
# last partial pack: the next call packs it.
STAMP="$BASE/.packed-$NAME"
[ -e "$STAMP" ] || touch "$STAMP"
written() {  # what was written to the store since STAMP, relative to BASE: no checkpoints, no superseded runs
  # (nor a temporary file a killed writer left: store._atomic writes ".<name>.<random>.tmp" before its rename)
  (cd "$BASE" && find "$NAME" -type f -newer "$STAMP" -not -path "*/ckpt/*" -not -path "*/superseded/*" \
    -not -name ".*.tmp" | sort)
}
finished_only() {  # of the files listed on stdin: the store's own, the logs and the finished runs' (never a run
  # still training, nor one trained again and not finished, whose files would land on its old finished folder)
  while read -r f; do
    run=$(echo "$f" | cut -d/ -f2)
    if [ "$(dirname "$f")" = "$NAME" ] || [ "$run" = logs ] || [ -e "$BASE/$NAME/$run/done" ]; then echo "$f"; fi
  done
}
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
PENDING="$RESULTS/logs/call-$START.json"
call_record() {  # this call so far, as one line of calls.jsonl ($1: a note)
  local trained
  trained=$(cat "$RESULTS"/logs/worker*-"$START".log 2>/dev/null | grep ": done in" | grep -vc "done in 0.0s")
  printf '{"start": %s, "seconds": %s, "card": "%s", "workers": %s, "compile": "%s", "final": %s, "runs_trained": %s%s}\n' \
    "$START" "$(elapsed)" "${CARD:-$DEVICE}" "$WORKERS" "${COMPILE:-}" "$FINAL" "$trained" "${1:+, \"note\": \"$1\"}"
}
pack_partial() {  # the store's own files, the logs and the finished runs: never a run still training
  # The call's record so far, in case it is stopped before it appends its line to calls.jsonl (chapter 10 reads both).
  call_record "stopped early (by the device tool): its seconds up to its last partial pack, a lower bound" \
    > "$PENDING.tmp" && mv "$PENDING.tmp" "$PENDING"
  written | finished_only > "$MARK.partial"
  tar czf "$OUT/partial.tmp" -C "$BASE" -T "$MARK.partial" 2>/dev/null
  if [ "$(stat -c %s "$OUT/partial.tmp" 2>/dev/null || echo 0)" -le $(( 15 * 1024 * 1024 )) ]; then
    mv "$OUT/partial.tmp" "$PARTIAL"
  else
    rm -f "$OUT/partial.tmp"
  fi
}

"$PY" -m dpaat_lib prepare --profile "$PROFILE" --data "$DATA" --results "$RESULTS" $GRID_ARGS
echo "[$(elapsed)s] data ready"

if [ "$BENCH" = 1 ]; then
  "$PY" benchmarks/train_throughput.py --device "$DEVICE" $BENCH_ARGS \
    --json "$RESULTS/benchmark-$DEVICE.json" 2>&1 | tee "$OUT/benchmark.txt"
  echo "[$(elapsed)s] benchmark done"
fi

mps_start  # scripts/device_env.sh

if [ "$WORKERS" = auto ]; then
  WORKERS=8
  if [ "$FINAL" = 1 ]; then  # the window a run will have: what is left, less this choice (~10 s) and the last 25 s
    CHOICE=$("$PY" -m dpaat_lib grid --profile "$PROFILE" --book --data "$DATA" --results "$RESULTS" $GRID_ARGS \
      ${COMPILE:+--compile $COMPILE} --workers-for $(( LIMIT - $(elapsed) - 35 + NEXT_TRAIN )) | tail -n 2)
    echo "$CHOICE"
    [[ "$(echo "$CHOICE" | tail -n 1)" =~ ^[0-9]+$ ]] && WORKERS=$(echo "$CHOICE" | tail -n 1)
  fi
  echo "WORKERS=auto: $WORKERS"
fi

LEFT=$(( LIMIT - $(elapsed) ))
TRAIN_END=$(( LEFT - EXTRAS_RESERVE ))
FINISH=()
if [ "$FINAL" = 1 ]; then
  TRAIN_END=$(( LEFT - 25 ))
  FINISH=(--finish-by $(( TRAIN_END + NEXT_TRAIN )))
  echo "a run starts only if expected to finish within $(( TRAIN_END + NEXT_TRAIN ))s (this call's ${TRAIN_END}s +" \
    "${NEXT_TRAIN}s of the next call's NEXT=${NEXT}s)"
fi
CLAIMS=/tmp/claims-$START
echo "[$(elapsed)s] $WORKERS workers; no training after ${TRAIN_END}s from now, all stopped after $(( LEFT - 20 ))s"
PIDS=()
# --foreground: the workers stay in the call's process group, so that whatever stops the call (the device tool at
# its limit) stops them too; plain timeout puts each in a group of its own, where it would go on training into the
# next call on the warm machine, beside that call's workers.
for k in $(seq 1 "$WORKERS"); do
  timeout --foreground -k 5 $(( LEFT - 20 )) "$PY" -m dpaat_lib grid --profile "$PROFILE" --book --data "$DATA" \
    --results "$RESULTS" --device "$DEVICE" --claim "$CLAIMS" --extras --retrain-lost-extras --sharing "$WORKERS" \
    "${FINISH[@]}" --time-budget "$TRAIN_END" --no-progress --threads 1 ${COMPILE:+--compile $COMPILE} $GRID_ARGS \
    > "$RESULTS/logs/worker$k-$START.log" 2>&1 &
  PIDS+=($!)
  sleep 2  # staggered starts: the first runs claimed are the STD runs, in order
done
# The nap runs in the background so that TERM reaches the loop at once and the trap ends the nap too: a plain
# `while sleep` left its sleep running after the kill, holding the call's output open for up to PACK_EVERY s.
(trap 'kill "${nap:-}" 2>/dev/null; exit 0' TERM
 while :; do sleep "$PACK_EVERY" & nap=$!; wait "$nap" || break; pack_partial; done) &
PACKER=$!
wait "${PIDS[@]}"
kill "$PACKER" 2>/dev/null; wait "$PACKER" 2>/dev/null
echo "[$(elapsed)s] workers done"
mps_stop

# One line per call in the store's calls.jsonl (packed with the results): the grid's GPU time, from its calls.
call_record >> "$RESULTS/calls.jsonl" && rm -f "$PENDING" "$PENDING.tmp"

grep -h "done in\|FAILED\|interrupted\|extras:\|not started\|again" "$RESULTS"/logs/worker*-"$START".log | sort | tail -n 80
grep -h -A12 "FAILED" "$RESULTS"/logs/worker*-"$START".log | head -n 60
ARCHIVE="$OUT/results-$PROFILE-$START.tgz"
touch "$STAMP.new"  # before the list: nothing written after it can be missed by the next call
written | finished_only > "$MARK.list"
tar czf "$ARCHIVE" -C "$BASE" -T "$MARK.list" && PACKED=1
rm -f "$PARTIAL" "$OUT/partial.tmp"  # the final archive holds all of it
echo "$(wc -l < "$MARK.list") files written since the last whole archive packed"
if [ "$(stat -c %s "$ARCHIVE")" -gt $(( 15 * 1024 * 1024 )) ]; then
  split -b 15M -d "$ARCHIVE" "$ARCHIVE.part-" && rm "$ARCHIVE"  # cat the parts in order to unpack
fi
[ "${PACKED:-0}" = 1 ] && mv "$STAMP.new" "$STAMP"
ls -la "$OUT"
echo "[$(elapsed)s] packed"
