# Sourced by the device scripts: the Python packages a lent GPU lacks, the repository on the path, torch.compile's
# cache, the card.
# Expects PY (the python with torch). The wheels travel in .whl/ (README, "On a GPU").
if [ -d /tmp/site/pytorch_grad_cam ] && [ -d /tmp/site/torchattacks ]; then
  export PYTHONPATH=/tmp/site  # installed by an earlier call on this warm machine (a call's environment is new)
elif ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import pytorch_grad_cam, torchattacks" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# torch.compile's cache (inductor's and AOTAutograd's graphs, Triton's kernels), one folder for every process,
# seeded on a fresh machine from the cache an earlier session brought back (device_session.sh packs it; carry
# scratch/compile-cache, its parts): what an earlier machine compiled is not compiled again (on a CPU a warm
# cache took a twelfth to an eighteenth of a cold one's seconds, benchmarks/compile_time.py).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/dpaat-compile-cache}
SEED=${COMPILE_CACHE_SEED:-scratch/compile-cache}
if [ -z "$(ls -A "$TORCHINDUCTOR_CACHE_DIR" 2>/dev/null)" ] && ls "$SEED"/compile-cache.tgz.part-* >/dev/null 2>&1; then
  mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
  if cat "$SEED"/compile-cache.tgz.part-* | tar xzf - -C "$TORCHINDUCTOR_CACHE_DIR"; then
    echo "compile cache seeded from $SEED ($(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1))"
  else  # a half-unpacked cache could hold truncated entries: start empty instead
    rm -rf "$TORCHINDUCTOR_CACHE_DIR" && mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
    echo "compile cache in $SEED unreadable: starting with an empty one"
  fi
fi
# NVIDIA's multi-process service, so that several processes' small kernels run side by side on the card rather
# than taking turns: the grid's workers run under it, and so do the check's benchmarks, which judge the modes as the
# grid will use the card. MPS=0 leaves it off; a machine without it, or where it fails a tiny CUDA program, runs
# without (said in the log either way).
mps_start() {
  if [ "${MPS:-1}" != 1 ] || ! command -v nvidia-cuda-mps-control >/dev/null; then echo "MPS off"; return 0; fi
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  # One a check cut short left running would refuse a second start: stop it first (an error where there is none).
  echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 && sleep 1
  if nvidia-cuda-mps-control -d \
    && timeout 20 "$PY" -c "import torch; assert torch.ones(2, device='cuda').sum().item() == 2"; then
    echo "MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off (could not start it)"
  fi
}
mps_stop() {
  if [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then echo quit | nvidia-cuda-mps-control; fi
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
