#!/bin/bash
# session 8, call 7: rustbpe on 8 threads (the new default) against one per CPU (today's, RAYON_NUM_THREADS=16): the
# cold start phase by phase, 20-step runs (save every 5) as the command starts them, alternating, with bytecode
# (compileall into a cache, as pip leaves it) and without (as this machine runs Python); then the real 500M-token
# run of the working tree with bytecode
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; nproc; } | tee $OUT/env.txt
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site $PWD/tinylab > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
BC="-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
R() { name=$1; h=/tmp/c7-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$name TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
  (env $2 EARLY=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 .carry/s8/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/$name /" >> $OUT/tl.txt)
  echo "$name TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^$name (time:|TL .* Trainer.__init__)" $OUT/tl.txt | cut -c1-250; }
for i in 1 2; do
  R bcA$i "$BC RAYON_NUM_THREADS=16"
  R bcB$i "$BC X=1"
done
for i in 1 2; do
  R nbA$i "RAYON_NUM_THREADS=16"
  R nbB$i "X=1"
done
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
h=/tmp/c7-e2e; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
echo "$(date +%s.%N) START" > $OUT/e2e_bytecode.log
(env $BC PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
  /usr/bin/time -f "wall %e s, max rss %M KB" timeout 285 python3 -m tinylab.train --preset ittybitty --run e2e --no-progress 2>&1 | stamp >> $OUT/e2e_bytecode.log)
echo "$(date +%s.%N) END" >> $OUT/e2e_bytecode.log; grep -E "time:|wall" $OUT/e2e_bytecode.log | cut -c1-300
cp $h/home/runs/e2e/metrics.jsonl $OUT/e2e_bytecode_metrics.jsonl
echo "== $(date -u +%T) end"
