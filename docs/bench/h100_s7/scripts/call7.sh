#!/bin/bash
# session 7, call 7: this machine's Python never writes bytecode (PYTHONDONTWRITEBYTECODE=1) and its torch was installed
# without any (0 .pyc files for 2,141 .py), so every process compiles every module it imports from source. pip writes
# them at install time. The final tree's real run, cold caches otherwise: first with bytecode compiled beforehand into a
# cache (what an ordinary `pip install` leaves), then as this machine runs it (the figures of every earlier call)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; echo "site-packages $SP: $(find $SP -name '*.pyc' | wc -l) .pyc, $(find $SP -name '*.py' | wc -l) .py"; env | grep -E "^PYTHON"; } | tee $OUT/env.txt
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP > /dev/null 2>&1; echo "compileall of site-packages into /tmp/pyc: $(( $(date +%s) - t0 )) s, $(find /tmp/pyc -name '*.pyc' | wc -l) files" | tee -a $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; h=/tmp/c7-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  (env $2 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 285 python3 -m tinylab.train --preset ittybitty --run e2e-$name --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; grep -E "time:|wall" $OUT/e2e_$name.log | cut -c1-300; cp $h/home/runs/e2e-$name/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; }
R bytecode "-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
R nobytecode "X=1"
echo "== $(date -u +%T) end"
