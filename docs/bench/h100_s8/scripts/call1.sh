#!/bin/bash
# session 8, call 1: variants of the MLP epilogue GEMM (aux prefetched before the K loop, warp specialisation) and
# the lm_head's logits GEMM through the same persistent TMA kernel, against cuBLAS, twice each
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } | tee $OUT/env.txt
timeout 400 python3 .carry/s8/epi_variants.py all 2>&1 | tee $OUT/epi_variants.txt
echo "== $(date -u +%T) end"
