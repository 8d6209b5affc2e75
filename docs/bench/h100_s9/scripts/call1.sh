#!/bin/bash
# session 9, call 1: the data child's two phases, HEAD (old: per-document encode calls, parquet read in line) against
# the working tree (new: runs of documents per encode call, row groups read ahead on a thread), cold, alternating;
# then 20-step cold runs with bytecode, alternating; then the real 500M-token run of the working tree with bytecode
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; nproc; lscpu | grep -E "Model name|MHz"; } | tee $OUT/env.txt
P() { h=/tmp/p-$1; rm -rf $h; mkdir -p $h/fineweb && cp .carry/fineweb/*.parquet $h/fineweb/
  echo "== $1 $2" | tee -a $OUT/child_probe.txt; env TINYLAB_HOME=$h PYTHONPATH=/tmp/site:$2 timeout 100 python3 .carry/s9/child_probe.py 2>&1 | tee -a $OUT/child_probe.txt; }
for i in 1 2 3; do P old$i $PWD/.carry/s9/old; P new$i $PWD; done
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site $PWD/tinylab $PWD/.carry/s9/old > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
BC="-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
R() { name=$1; h=/tmp/c1-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$name TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
  (env $BC EARLY=1 PYTHONPATH=/tmp/site:$2 TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 .carry/s9/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/$name /" >> $OUT/tl.txt)
  echo "$name TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^$name (time:|TL .* Trainer.__init__)" $OUT/tl.txt | cut -c1-250; }
for i in 1 2; do R old$i $PWD/.carry/s9/old; R new$i $PWD; done
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
h=/tmp/c1-e2e; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
echo "$(date +%s.%N) START" > $OUT/e2e_bytecode.log
(env $BC PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
  /usr/bin/time -f "wall %e s, max rss %M KB" timeout 285 python3 -m tinylab.train --preset ittybitty --run e2e --no-progress 2>&1 | stamp >> $OUT/e2e_bytecode.log)
echo "$(date +%s.%N) END" >> $OUT/e2e_bytecode.log; grep -E "time:|wall" $OUT/e2e_bytecode.log | cut -c1-300
cp $h/home/runs/e2e/metrics.jsonl $OUT/e2e_bytecode_metrics.jsonl
echo "== $(date -u +%T) end"
