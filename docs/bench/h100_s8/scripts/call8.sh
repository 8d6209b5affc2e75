#!/bin/bash
# session 8, call 8: the step's cuBLAS GEMMs under the default BLAS path, cuBLASLt and cuBLAS; the GPU suite on the
# working tree (compile_model now empties Dynamo's caches first); one 20-step cold run phase by phase
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
PYTHONPATH=/tmp/site:$PWD timeout 120 python3 .carry/s8/blas_probe.py 2>&1 | tee $OUT/blas_probe.txt
PYTHONPATH=/tmp/site:$PWD timeout 300 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider 2>&1 | tail -15 | tee $OUT/pytest_gpu.txt
h=/tmp/c8; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
echo "F1 TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
(env EARLY=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
  timeout 120 python3 .carry/s8/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/F1 /" >> $OUT/tl.txt)
echo "F1 TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^F1 (time:|done)" $OUT/tl.txt | cut -c1-250
echo "== $(date -u +%T) end"
