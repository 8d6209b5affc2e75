#!/bin/bash
# session 6, call C: cold 20-step runs, alternating: A = HEAD db33b5a; B = the working tree (compile workers started
# before torch.compile's imports, quiesced after the warm-up); C = B with evaluation eager (no inference graphs);
# D = B ending in os._exit; E = B with TORCHINDUCTOR_COMPILE_THREADS=1 (no pool), once
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PROBE_TRITON=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head;
  python3 -c "from torch._inductor.compile_worker.subproc_pool import SubprocPool as P; print('quiesce', hasattr(P, 'quiesce'))"; } | tee $OUT/env.txt
R() { name=$1; code=$2; h=/tmp/cc-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "TL $(date +%s.%N) shell-start" > $OUT/tl_$name.txt
  (cd $code && env $3 PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    python3 $OLDPWD/.carry/s6/timeline.py --preset ittybitty --run tl --num-iterations 20 --no-progress >> $OUT/tl_$name.txt 2>&1)
  echo "TL $(date +%s.%N) shell-end" >> $OUT/tl_$name.txt; grep -E "time:" $OUT/tl_$name.txt | cut -c1-250; }
B=$PWD/.carry/s6/before
for i in 1 2; do
  R A$i $B X=1
  R B$i $PWD X=1
  R C$i $PWD EAGER_EVAL=1
  R D$i $PWD EXIT_FAST=1
  [ $i = 1 ] && R E1 $PWD TORCHINDUCTOR_COMPILE_THREADS=1
done
echo "== $(date -u +%T) end"
