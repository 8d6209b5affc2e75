#!/bin/bash
# session 5, call B: install flash-attn-4 (its CUDA 13 library carried in two halves over calls A and B), then fa4_bench
set -o pipefail
export PYTHONUNBUFFERED=1
ls -la .carry/fa4a .carry/fa4b
cat .carry/fa4a/cu13.part00 .carry/fa4b/cu13.part01 | md5sum
rm -rf /tmp/fa4site; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fa4site .carry/fa4b/*.whl || exit 1
cat .carry/fa4a/cu13.part00 .carry/fa4b/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/fa4site || exit 1
export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
python3 -c "import cutlass, flash_attn.cute; print('cutlass', cutlass.__version__)" || exit 1
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4cache
python3 .carry/s5/fa4_bench.py $OUT/fa4_bench.json 2>&1 | tail -40
echo "== second process (disk cache warm)"
python3 .carry/s5/fa4_bench.py $OUT/fa4_bench_warm.json 2>&1 | grep -E "import|first" 
echo "== $(date -u +%T) end"
