#!/bin/bash
# session 5, call E (same machine as C, D): flash-attn-4 step probe again with a Dynamo reset between cases;
# nested_compile_region probe, cold caches
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:$PWD:/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
python3 .carry/s5/fa4_step.py $OUT/fa4_step.jsonl 2>&1 | grep -v "Warning\|exe_args" | tail -8
export PYTHONPATH=/tmp/site:$PWD
i=10
for scope in nested model nested; do i=$((i+1))
  TORCHINDUCTOR_CACHE_DIR=/tmp/rc$i/ind TRITON_CACHE_DIR=/tmp/rc$i/tri python3 .carry/s5/regional.py $scope $OUT/regional.jsonl 2>&1 | grep -v Warning | tail -3
done
echo "== $(date -u +%T) end"
