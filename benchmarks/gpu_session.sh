#!/usr/bin/env bash
# One prepared GPU run: simulator speed, then the accuracy benchmark at full size.
# Usage on the GPU machine: bash benchmarks/gpu_session.sh   (an offline machine: put wheels for zarr & co in .whl/)
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, zarr, tomoformer; print('torch', torch.__version__, 'zarr', zarr.__version__)"
timeout 90 python3 benchmarks/bench_simulate.py ${BENCH_DEVICE:---device cuda} 2>&1 | tee "$OUT/bench_simulate.txt"
timeout "${ACCURACY_TIMEOUT:-400}" python3 benchmarks/accuracy.py --out /tmp/acc --size "${SIZE:-100}" --frames "${FRAMES:-64}" \
  --n-train "${N_TRAIN:-1000}" --n-test "${N_TEST:-100}" --epochs "${EPOCHS:-8}" --batch-size 16 \
  --models tomoformer_tiny,tomoformer_tiny@transformer,unet,seednet,threshold 2>&1 \
  | grep -v -E "^(INFO|LOCAL_RANK|GPU avail|TPU avail|HPU avail)|LeafSpec|litlogger|Tip" | tee "$OUT/accuracy.txt"
cp /tmp/acc/summary.json "$OUT/accuracy_summary.json" 2>/dev/null || true
