#!/bin/bash
# issue 16, session 4, call 3 (call 2 ran every short run with the code after: `python -m` from the repository
# root puts it first on sys.path, whatever PYTHONPATH says; now each run starts in its code's root): the ittybitty run's time outside the steps, cold caches, 20 steps, alternating the
# code before (HEAD: data on a thread) and after (data files made in a child process; compile workers shut down
# after the warm-up); then the real run end to end, cold caches, with the code after.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; code=$2; h=/tmp/c-$name; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  (cd $code && PYTHONPATH=/tmp/site:$code python3 -c "import tinylab.train as t; print('$name', t.__file__, hasattr(t, 'load_data_aside'))")
  echo "$(date +%s.%N) START" > $OUT/short_$name.log
  (cd $code && PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 150 python3 -m tinylab.train --preset ittybitty --run s-$name --num-iterations 20 --no-progress 2>&1 | stamp >> $OUT/short_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/short_$name.log; grep -E "time:|wall" $OUT/short_$name.log | cut -c1-260; }
R before1 $PWD/.carry/s4/before
R after1 $PWD
R before2 $PWD/.carry/s4/before
R after2 $PWD
F() { name=$1; h=/tmp/c-$name; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$(date +%s.%N) START" > $OUT/e2e_$name.log
  PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 290 python3 -m tinylab.train --preset ittybitty --run e2e-$name --no-progress 2>&1 | stamp >> $OUT/e2e_$name.log
  echo "$(date +%s.%N) END" >> $OUT/e2e_$name.log; cp $h/home/runs/e2e-$name/metrics.jsonl $OUT/e2e_${name}_metrics.jsonl; grep -E "time:|wall|done" $OUT/e2e_$name.log | cut -c1-260; }
F after
echo "== $(date -u +%T) end"
