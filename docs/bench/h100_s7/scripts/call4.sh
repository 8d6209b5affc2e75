#!/bin/bash
# session 7, call 4: the final tree (review fixes; checkpoints copied to the CPU before the thread writes them): the
# real ittybitty run end to end, cold caches, once; then the GPU suite
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head -20; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
h=/tmp/c4; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
echo "$(date +%s.%N) START" > $OUT/e2e_final.log
PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
  /usr/bin/time -f "wall %e s, max rss %M KB" timeout 285 python3 -m tinylab.train --preset ittybitty --run e2e-final --no-progress 2>&1 | stamp >> $OUT/e2e_final.log
echo "$(date +%s.%N) END" >> $OUT/e2e_final.log; grep -E "time:|wall" $OUT/e2e_final.log | cut -c1-300; cp $h/home/runs/e2e-final/metrics.jsonl $OUT/e2e_final_metrics.jsonl
PYTHONPATH=/tmp/site:$PWD timeout 250 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider 2>&1 | tail -15 | tee $OUT/pytest_gpu.txt
echo "== $(date -u +%T) end"
