#!/bin/bash
# session 5, call C: regional compilation probe (whole model vs one Block graph), cold caches, one process per run;
# also carries the first half of cutlass-dsl's CUDA 13 library for call D
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
python3 -c "import torch, torch._inductor.compile_fx; torch.zeros(1).cuda()"
i=0
for scope in model blocks model blocks; do i=$((i+1))
  TORCHINDUCTOR_CACHE_DIR=/tmp/rc$i/ind TRITON_CACHE_DIR=/tmp/rc$i/tri python3 .carry/s5/regional.py $scope $OUT/regional.jsonl 2>&1 | grep -v Warning | tail -3
done
echo "== $(date -u +%T) end"
