#!/bin/bash
# session 8, call 2: the lm_head's loss kernel alongside its GEMMs (two streams, cuBLAS SM carveout), twice;
# then the GPU suite on HEAD (the second review's fixes, 876dc13 and df22bb0, never ran on a GPU)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
timeout 200 python3 .carry/s8/ce_overlap.py 2>&1 | tee $OUT/ce_overlap.txt
timeout 330 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider 2>&1 | tail -25 | tee $OUT/pytest_gpu.txt
echo "== $(date -u +%T) end"
