#!/bin/bash
# session 12, call 8 (same machine as call 7): the library unpacked; tests/gpu with quack importable; the step A/B:
# without quack (tinylab's Triton kernels: before) and with it (tinylab.cute: after), alternating processes
set -o pipefail
export PYTHONUNBUFFERED=1
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
Q=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages
export QUACK_CACHE_DIR=/tmp/quackcache
git log --oneline -1 | cut -c1-80 | tee $OUT/env.txt
PYTHONPATH=$Q:$PWD timeout 300 python3 -m pytest -o addopts="" -q -p no:cacheprovider tests/gpu 2>&1 | tail -15 | tee $OUT/pytest_gpu.txt
for i in 1 2; do
  PYTHONPATH=$PWD python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --compile-scope regions,model --json $OUT/train_before.jsonl 2>&1 | tail -3
  PYTHONPATH=$Q:$PWD python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --compile-scope regions,model --json $OUT/train_after.jsonl 2>&1 | tail -3
done
echo "== $(date -u +%T) end"
