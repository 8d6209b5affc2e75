#!/bin/bash
# session 12, call 4 (same machine as call 3): the library joined and unpacked; probe2.py (lm_head scaled-exp, steps)
set -o pipefail
export PYTHONUNBUFFERED=1
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
export PYTHONPATH=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages:$PWD:$PWD/.carry/q2:$PWD/.carry/q3
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4cache QUACK_CACHE_DIR=/tmp/quackcache
timeout 560 python3 .carry/q3/probe2.py $OUT ${PARTS:-lm,step} 2>&1 | grep -v "Warning\|exe_args" | cut -c1-1500
echo "== $(date -u +%T) end"
