#!/bin/bash
# issue 16, session 3, call 6: the real run end to end, cold caches, the code before this session (76a5bf3) and
# after it, alternately in one call on one machine (bf16).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
E2E() { name=$1; tree=$2
  export TINYLAB_HOME=/tmp/home-$name TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-$name TRITON_CACHE_DIR=/tmp/triton-$name PYTHONUNBUFFERED=1
  mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  (cd $tree && PYTHONPATH=/tmp/site:$PWD /usr/bin/time -f "wall %e s, max rss %M KB" timeout 290 python3 -m tinylab.train --preset ittybitty --run e2e --no-progress 2>&1) | stamp >> $OUT/e2e_$name.log
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log
  cp $TINYLAB_HOME/runs/e2e/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; tail -3 $OUT/e2e_$name.log | cut -c1-300; }
E2E before .carry/before2
E2E after .
echo "== $(date -u +%T) end"
