#!/bin/bash
# issue 16, session 3, call 9: the real run twice on one machine: cold caches, then again with every cache warm
# (tokenizer and tokens on disk, Inductor's and Triton's caches full; a new run name).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home-w TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-w TRITON_CACHE_DIR=/tmp/triton-w
mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  /usr/bin/time -f "wall %e s, max rss %M KB" timeout 280 python3 -m tinylab.train --preset ittybitty --run e2e-$name --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; tail -3 $OUT/e2e_$name.log | cut -c1-300; }
R cold
R warm
echo "== $(date -u +%T) end"
