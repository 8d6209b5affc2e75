#!/bin/bash
# session 12, call 2 (same machine as call 1): the CUDA 13 library's second half joined to the first and unpacked;
# probe.py: the MLP epilogue GEMMs through quack, then the step with FA4 / quack / whole-model compile.
set -o pipefail
export PYTHONUNBUFFERED=1
ls -la /tmp/qs .carry/q2
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | md5sum
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
export PYTHONPATH=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages:$PWD:$PWD/.carry/q2
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4cache QUACK_CACHE_DIR=/tmp/quackcache
python3 -c "import cutlass, quack, flash_attn.cute; print('cutlass', cutlass.__version__)" || exit 1
timeout 540 python3 .carry/q2/probe.py $OUT 2>&1 | grep -v "Warning\|exe_args" | cut -c1-600
echo "== $(date -u +%T) end"
