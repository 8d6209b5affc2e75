#!/bin/bash
# session 12, call 6 (same machine as call 5): the library joined and unpacked into /tmp/qs/site-packages; with quack
# importable: the GPU tests of the lm_head paths, bench.lm_head (triton vs auto = scaled-exp), the step A/B
set -o pipefail
export PYTHONUNBUFFERED=1
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
export PYTHONPATH=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages:$PWD QUACK_CACHE_DIR=/tmp/quackcache
git log --oneline -1 | cut -c1-80 | tee $OUT/env.txt
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda.py -k "scaled_exp or triton_loss or compiled_bf16 or precompile or evaluation_matches" 2>&1 | tail -15 | tee $OUT/pytest_gpu.txt
python3 -m tinylab.bench.lm_head --kernels triton,auto,triton,auto --json $OUT/lm_head.jsonl 2>&1 | tail -12
for i in 1 2; do python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --loss chunked-triton,chunked --compile-scope regions,model --json $OUT/train_ab.jsonl 2>&1 | tail -6; done
echo "== $(date -u +%T) end"
