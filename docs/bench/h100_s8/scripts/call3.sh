#!/bin/bash
# session 8, call 3: does the loss kernel overlap a GEMM at all (one chunk, two streams)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
timeout 200 python3 .carry/s8/overlap_probe.py 2>&1 | tee $OUT/overlap_probe.txt
echo "== $(date -u +%T) end"
