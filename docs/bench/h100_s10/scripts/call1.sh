#!/bin/bash
# session 10, call 1: fused QKV (branch qkv) — GPU tests from its tree, then the A/B in one process, then profiles
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; nproc; } | tee $OUT/env.txt
cd .carry/s10/qkv
export PYTHONPATH=/tmp/site:$PWD
timeout 200 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tail -15 > $OUT/pytest_gpu.txt; tail -5 $OUT/pytest_gpu.txt
timeout 330 python3 ../qkv_ab.py $OUT 2>&1 | grep -v Warning | tail -20 > $OUT/ab.log; cat $OUT/ab.log
