#!/bin/bash
# session 9, call 6: the GPU tests on the final tree (commit 018a3dd: after the second probe)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git status --short | head -3; nproc; } | tee $OUT/env.txt
timeout 500 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -rs -p no:cacheprovider 2>&1 | tail -15 > $OUT/pytest_gpu.txt
tail -4 $OUT/pytest_gpu.txt
