#!/bin/bash
# session 8, call 9: the final tree's real 500M-token run, cold caches: as this machine runs Python (no bytecode), then
# with bytecode compiled beforehand into a cache (as pip leaves it)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; h=/tmp/c9-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  (env $2 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 280 python3 -m tinylab.train --preset ittybitty --run e2e-$name --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; grep -E "time:|wall" $OUT/e2e_$name.log | cut -c1-300; cp $h/home/runs/e2e-$name/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; }
R nobytecode "X=1"
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site $PWD/tinylab > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
R bytecode "-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
echo "== $(date -u +%T) end"
