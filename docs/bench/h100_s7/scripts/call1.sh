#!/bin/bash
# session 7, call 1: the MLP GEMM's tile and programs-per-SM sweep; cold 20-step runs (save every 5), alternating:
# A = HEAD e3c9418 (before), B = the working tree as the command runs it (EARLY: data child before the imports;
# kernels compiled ahead on a thread; checkpoints written on a thread)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PROBE_TRITON=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head -30; } | tee $OUT/env.txt
PYTHONPATH=/tmp/site:$PWD timeout 240 python3 .carry/s7/mlp_sweep.py 2>&1 | tee $OUT/mlp_sweep.txt
R() { name=$1; code=$2; h=/tmp/c1-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "TL $(date +%s.%N) shell-start" > $OUT/tl_$name.txt
  (cd $code && env $3 PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 $OLDPWD/.carry/s7/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress >> $OUT/tl_$name.txt 2>&1)
  echo "TL $(date +%s.%N) shell-end" >> $OUT/tl_$name.txt; grep -E "time:" $OUT/tl_$name.txt | cut -c1-250; }
B=$PWD/.carry/s7/before
for i in 1 2; do
  R A$i $B X=1
  R B$i $PWD EARLY=1
done
echo "== $(date -u +%T) end"
