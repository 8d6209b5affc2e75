#!/bin/bash
# session 9, call 2: the real 500M-token run, cold caches, with bytecode (compileall into a cache, as pip leaves it):
# HEAD (old) then the working tree (new: runs of documents per encode call, row groups read ahead), one machine
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; nproc; } | tee $OUT/env.txt
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site $PWD/tinylab $PWD/.carry/s9/old > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
BC="-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
E() { name=$1; h=/tmp/c2-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  (cd $2 && env $BC PYTHONPATH=/tmp/site:$2 TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 280 python3 -m tinylab.train --preset ittybitty --run e2e --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; grep -E "time:|wall" $OUT/e2e_$name.log | cut -c1-300
  cp $h/home/runs/e2e/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; }
E old $PWD/.carry/s9/old
E new $PWD
echo "== $(date -u +%T) end"
