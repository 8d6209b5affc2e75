#!/bin/bash
# session 12, call 9 (same machine): the real 500M-token run with tinylab.cute (quack importable), cold caches
# (Inductor, Triton and quack's), bytecode as pip leaves it, on the 11-shard docs corpus; as session 11's e2e.sh
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/s11/whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
Q=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; nproc; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site /tmp/qs/site-packages $PWD/tinylab > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
BC="-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
h=/tmp/e2e; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
echo "$(date +%s.%N) START" > $OUT/e2e.log
env $BC PYTHONPATH=/tmp/site:$Q:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton QUACK_CACHE_DIR=$h/quack \
  /usr/bin/time -f "wall %e s, max rss %M KB" timeout 300 python3 -m tinylab.train --preset ittybitty --num-shards 11 --run e2e --no-progress 2>&1 | stamp >> $OUT/e2e.log
echo "$(date +%s.%N) END" >> $OUT/e2e.log; grep -E "time:|wall|val bpb" $OUT/e2e.log | cut -c1-300 | tail -12
cp $h/home/runs/e2e/metrics.jsonl $OUT/e2e_metrics.jsonl
echo "== $(date -u +%T) end"
