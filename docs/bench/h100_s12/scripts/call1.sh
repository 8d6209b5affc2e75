#!/bin/bash
# session 12, call 1: environment; the small CuTe DSL / quack / FA4 wheels installed into /tmp/qs/site-packages;
# the first half of cutlass-dsl's CUDA 13 library kept for call 2; today's step, regions vs whole-model compile.
set -o pipefail
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; python3 --version; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())"; date -u; git log --oneline -1 | cut -c1-80; nproc; python3 -m pip show cuda-bindings protobuf 2>/dev/null | grep -E "^(Name|Version)"; } | tee $OUT/env.txt
rm -rf /tmp/qs; mkdir -p /tmp/qs && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/qs/site-packages .carry/q1/whl/*.whl || exit 1
cp .carry/q1/cu13.part00 /tmp/qs/ && ls -la /tmp/qs
python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --compile-scope regions,model,regions,model --json $OUT/train_scope.jsonl 2>&1 | tail -8
echo "== $(date -u +%T) end"
