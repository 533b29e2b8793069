# Sourced by the device scripts: the Python packages a lent GPU lacks, the repository on the path, the card.
# Expects PY (the python with torch). The wheels travel in .whl/ (README, "On a GPU").
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import pytorch_grad_cam, torchattacks" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
