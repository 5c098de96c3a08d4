#!/usr/bin/env bash
# The training-iteration benchmark on a GPU: benchmarks/bench_training.py on the
# first GPU TensorFlow sees, M up to 5000, batch up to 1e5, float64 and float32,
# bare gpflow loops interleaved in the same run, peak device memory, and memory
# against N up to 1e7. One prepared script: an estimate of 30-60 minutes on one
# GPU (it has not run on one yet).
#
#   benchmarks/gpu.sh [OUTPUT_DIR] [full|quick]     (default: benchmarks/gpu full)
#
# "full" also times gpnat-adam and gpnat-fused with XLA (jit_compile=True): on
# a CPU XLA was slower at M >= 50 (benchmarks/XLA.md); whether a GPU differs is
# what it measures. "quick" fits a short lease (a few minutes): M in {100, 1000},
# batch in {1000, 10000}, float32 and float64, no memory-against-N runs, no XLA;
# it still gives every ratio and the ms per iteration at M = 1000, batch 1e4.
#
# Writes OUTPUT_DIR/RESULTS.md, results.json and nvidia-smi.txt (the card), and
# first CHOLESKY.md and cholesky.json (benchmarks/bench_cholesky.py: whether the
# blocked Cholesky gradient and its threshold also pay on the card; about a minute).
# Needs TensorFlow with GPU support: an existing .venv (make install), or
# PYTHON=/path/to/python; without either it makes .venv and installs gpnat with
# tensorflow[and-cuda] (network needed). Exits 3 when TensorFlow sees no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu}
SIZE=${2:-full}
case "$SIZE" in
    full) MATRIX=(--M 20,50,100,200,500,1000,2000,5000 --batch 256,1000,10000,100000 --memory-scaling 1e5,1e6,1e7
                  --configs gpflow-adam,gpflow-hybrid,gpnat-adam,gpnat-fused,gpnat-default,gpnat-adam-xla,gpnat-fused-xla) ;;
    quick) MATRIX=(--M 100,1000 --batch 1000,10000) ;;
    *) echo "size must be full or quick, got $SIZE" >&2; exit 2 ;;
esac
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ] && [ -z "${PYTHON:-}" ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -e . 'tensorflow[and-cuda]'
    PY=.venv/bin/python
fi
if ! "$PY" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 3)"; then
    echo "TensorFlow sees no GPU: nothing run" >&2
    exit 3
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1 || true
export PYTHONUNBUFFERED=1
"$PY" benchmarks/bench_cholesky.py --M 128,256,512,1000,2000,5000 --calls 3 --repeats 3 \
    --output "$OUT/CHOLESKY.md" --json "$OUT/cholesky.json"
"$PY" benchmarks/bench_training.py "${MATRIX[@]}" --dtype float64,float32 \
    --num-data 200000 --repeats 3 --seconds 0.3 --iterations 200 \
    --output "$OUT/RESULTS.md" --json "$OUT/results.json"
