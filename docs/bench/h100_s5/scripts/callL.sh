#!/bin/bash
# session 5, call L: the GPU test suite after the review fixes (a decoding test added)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git status --short | head -20; } | tee $OUT/env.txt
PYTHONPATH=/tmp/site:$PWD timeout 400 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging 2>&1 > $OUT/pytest_gpu.txt; grep -E "^E  |^FAILED|passed|failed" $OUT/pytest_gpu.txt | head -20
echo "== $(date -u +%T) end"
