#!/bin/bash
# session 7, call 3: the GPU suite on the working tree; a second sweep of the MLP GEMM's tiles (twice, alternating);
# the bench's step, by region and whole model
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head -30; } | tee $OUT/env.txt
timeout 300 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider 2>&1 | tail -25 | tee $OUT/pytest_gpu.txt
timeout 200 python3 .carry/s7/mlp_sweep2.py 2>&1 | tee $OUT/mlp_sweep2.txt
echo "== $(date -u +%T) end"
