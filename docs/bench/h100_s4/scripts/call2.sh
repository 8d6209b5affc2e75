#!/bin/bash
# issue 16, session 4, call 2: the ittybitty run's time outside the steps, cold caches, 20 steps, alternating the
# code before (HEAD: data on a thread) and after (data files made in a child process; compile workers shut down
# after the warm-up); then the step with CUDA graphs (mode="reduce-overhead") against the default, alternating.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; code=$2; h=/tmp/c-$name; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/short_$name.log
  PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 150 python3 -m tinylab.train --preset ittybitty --run s-$name --num-iterations 20 --no-progress 2>&1 | stamp >> $OUT/short_$name.log
  echo "$(date +%s.%N) END" >> $OUT/short_$name.log; grep -E "time:|wall" $OUT/short_$name.log | cut -c1-260; }
R before1 $PWD/.carry/s4/before
R after1 $PWD
R before2 $PWD/.carry/s4/before
R after2 $PWD
echo "== $(date -u +%T) cudagraphs"
PYTHONPATH=/tmp/site:$PWD timeout 200 python3 .carry/s4/cudagraphs.py $OUT/steps_cudagraphs.jsonl 2>&1 | grep -v Warn | tail -12
echo "== $(date -u +%T) end"
