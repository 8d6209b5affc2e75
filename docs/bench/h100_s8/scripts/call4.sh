#!/bin/bash
# session 8, call 4: whose start is late, the trainer's or the data child's? 20-step cold runs (save every 5) as the
# command starts them (EARLY=1), timed phase by phase; with bytecode (compileall into a cache, as pip leaves it) the data
# child at nice 10 (today), at nice 0, and at nice 0 with 8 Inductor compile workers instead of 16, alternating; then
# without bytecode (as this machine runs Python) at nice 10 and at nice 0
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
SP=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; nproc; } | tee $OUT/env.txt
t0=$(date +%s); PYTHONPYCACHEPREFIX=/tmp/pyc python3 -m compileall -q -j 16 $SP /tmp/site $PWD/tinylab > /dev/null 2>&1; echo "compileall: $(( $(date +%s) - t0 )) s" | tee -a $OUT/env.txt
BC="-u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc"
R() { name=$1; h=/tmp/c4-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$name TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
  (env $2 EARLY=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 .carry/s8/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/$name /" >> $OUT/tl.txt)
  echo "$name TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^$name (time:|TL .* Trainer.__init__)" $OUT/tl.txt | cut -c1-250; }
for i in 1 2; do
  R A$i "$BC NICE=10"
  R B$i "$BC NICE=0"
  R C$i "$BC NICE=0 TORCHINDUCTOR_COMPILE_THREADS=8"
done
R D1 "NICE=10"
R E1 "NICE=0"
echo "== $(date -u +%T) end"
