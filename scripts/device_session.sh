#!/usr/bin/env bash
# A whole GPU session in one call (device time is short: a lent machine's start, each call's transfers and
# the idle time between calls all count):
#
#   bash scripts/device_session.sh        (carry scratch/ham-gpu and .whl; timeout_s 600)
#
# 1. unless the store holds a compile decision taken under this machine's torch version for this training code
#    ($RESULTS/compile-decision.json, committed from an earlier session) or CHECK=1:
#    scripts/device_check.sh (the GPU tests, the benchmark eager and through CUDA graphs, the decision;
#    at most CHECK_LIMIT seconds, TOTAL - 60 by default),
#    its outputs packed into $OUT/check.tgz (the device tool brings back at most 8 files), its benchmarks
#    also copied into the store for the grid's estimates;
# 2. scripts/device_grid.sh for the rest of TOTAL seconds, as the session's last call (FINAL=1: a run
#    starts only if it is expected to finish), with COMPILE=auto; NEXT=S: a second call of S seconds follows at
#    once on the warm machine (see below), so a run may also start if it is expected to finish within it;
# 3. torch.compile's cache (seeded from scratch/compile-cache when carried, scripts/device_env.sh) packed
#    into $OUT/compile-cache.tgz.part-NN, unless over CACHE_MAX_MB (a call sends 64 MiB in all: the tracked
#    files, at most 24 MiB by a test, the data copy 14.5 MB, so a larger cache could not be carried back);
# 4. the whole log in $OUT/session.log.
# Afterwards: unpack check.tgz and copy its benchmark-cuda-*.json and compile-decision.json into
# results/paper/; unpack the results archive(s) with scripts/unpack_results.py --into results; put the
# compile-cache parts in
# scratch/compile-cache/ (replacing what was there) and carry it next time (README, "On a GPU").
#
# A session's 15 minutes of device time hold one call of 600 s (the machine's start and the transfers took 42 s
# on an H200) and about 250 s more. The machine stays warm for 30 s after a call: a second call sent at once
# (no reading of the first's output in between) continues the same store, and the runs the first left unfinished:
#
#   NEXT=150 TOTAL=570 bash scripts/device_session.sh      (timeout_s 600), then the moment it returns, with
#   T = min(200, the first reply's budget_left_s - 60), skipped if T < 120 or the machine is no longer warm:
#   CHECK=0 CACHE_MAX_MB=0 PACK_EVERY=20 TOTAL=$T bash scripts/device_session.sh   (timeout_s T + 35)
#
# (the device tool runs one call at a time: the second is sent when the first has returned, not beside it; a
# call's limit is its timeout_s or the session's device time left, whichever is less, and a call cut by it brings
# back only its last partial archive, hence the second's TOTAL from what is left).
set -uo pipefail
START=$(date +%s)
TOTAL=${TOTAL:-570}
PY=${PY:-python3}
OUT=${OUT:-/tmp/dpaat-out}
PROFILE=${PROFILE:-paper}
STORE=${STORE:-/root/dpaat}  # outside the carried paths: a warm machine keeps it between calls
RESULTS=${RESULTS:-$STORE/$PROFILE}
CHECK=${CHECK:-auto}
CACHE_MAX_MB=${CACHE_MAX_MB:-20}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$STORE/compile-cache}  # kept between calls
mkdir -p "$OUT" "$STORE"
exec > >(tee -a "$OUT/session.log") 2>&1
elapsed() { echo $(( $(date +%s) - START )); }

# The store the grid continues: the committed results, copied by the session's first call only. A later call on
# the warm machine must not fill in files the store lacks: a run moved to superseded/ and training again would get
# its old done, metrics and extras back (and a run finished would never resume).
[ -d "$RESULTS" ] || { mkdir -p "$(dirname "$RESULTS")" && cp -r "results/$PROFILE" "$RESULTS"; }  # RESULTS may be set
if [ "$CHECK" = auto ]; then
  CHECK=1
  "$PY" scripts/compile_decision.py --read "$RESULTS/compile-decision.json" --usable && CHECK=0
fi
if [ "$CHECK" = 1 ]; then
  CHECK_OUT=$(mktemp -d /tmp/dpaat-check.XXXXXX)
  # Capped, so that a slow check still leaves the call time to pack and return what it measured.
  CHECK_LIMIT=${CHECK_LIMIT:-$(( TOTAL - 60 ))}
  OUT=$CHECK_OUT DECISION="$STORE/compile-decision.json" LIMIT=$CHECK_LIMIT timeout -k 5 $(( CHECK_LIMIT + 30 )) \
    bash scripts/device_check.sh
  tar czf "$OUT/check.tgz" -C "$CHECK_OUT" .
  # In the store, the benchmarks tell the grid's estimates how much faster the decided mode trains than the
  # stored runs did (grid.mode_speedups); they come back in check.tgz, not in the results archive.
  cp "$CHECK_OUT"/benchmark-*.json "$RESULTS/" 2>/dev/null
  echo "[$(elapsed)s] check done"
elif [ -f "$RESULTS/compile-decision.json" ] \
    && "$PY" scripts/compile_decision.py --read "$RESULTS/compile-decision.json" --usable; then
  echo "[$(elapsed)s] check skipped: the store's compile decision was taken under this torch version and training code"
else
  echo "[$(elapsed)s] check skipped (CHECK=0): no usable compile decision in the store, so the grid trains eagerly"
fi

LIMIT=$(( TOTAL - $(elapsed) )) FINAL=1 NEXT=${NEXT:-0} COMPILE=auto RESULTS="$RESULTS" PROFILE="$PROFILE" OUT="$OUT" \
  DECISION="$STORE/compile-decision.json" bash scripts/device_grid.sh

if [ "$CACHE_MAX_MB" = 0 ]; then
  echo "[$(elapsed)s] compile cache not packed (CACHE_MAX_MB=0)"  # a session's second call: the first packed it
elif [ -n "$(ls -A "$TORCHINDUCTOR_CACHE_DIR" 2>/dev/null)" ]; then
  PACKED=$(mktemp /tmp/compile-cache.XXXXXX)
  # Fast gzip, and capped: the call's last seconds; a cache left behind costs compile time, not results.
  if ! timeout 25 tar -I "gzip -1" -cf "$PACKED" -C "$TORCHINDUCTOR_CACHE_DIR" --exclude=./locks .; then
    echo "[$(elapsed)s] compile cache not packed (tar failed or took over 25 s)"
  elif [ "$(stat -c %s "$PACKED")" -le $(( CACHE_MAX_MB * 1024 * 1024 )) ]; then
    split -b 15M -d "$PACKED" "$OUT/compile-cache.tgz.part-"  # the device tool brings back files of 16 MiB
    echo "[$(elapsed)s] compile cache packed: $(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1), $(du -h "$PACKED" | cut -f1) packed"
  else
    echo "[$(elapsed)s] compile cache not packed: $(du -h "$PACKED" | cut -f1) is over CACHE_MAX_MB=$CACHE_MAX_MB"
  fi
  rm -f "$PACKED"
fi
echo "[$(elapsed)s] session done"
