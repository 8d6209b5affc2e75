#!/bin/bash
# session 7, call 5 (a pair in one call): the final tree (checkpoint copies into page-locked memory again, their events
# recorded on each GPU's stream) then HEAD e3c9418, the real ittybitty run end to end with cold caches; then the GPU
# suite's checkpoint and precompile tests
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git status --short | head -20; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; code=$2; h=/tmp/c5-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  (cd $code && PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 285 python3 -m tinylab.train --preset ittybitty --run e2e-$name --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; grep -E "time:|wall" $OUT/e2e_$name.log | cut -c1-300; cp $h/home/runs/e2e-$name/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; }
R after $PWD
R before $PWD/.carry/s7/before
PYTHONPATH=/tmp/site:$PWD timeout 60 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -k "checkpoint_writer or precompile" -p no:logging -p no:cacheprovider 2>&1 | tail -3 | tee $OUT/pytest_gpu.txt
echo "== $(date -u +%T) end"
