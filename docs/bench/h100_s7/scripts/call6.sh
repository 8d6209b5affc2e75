#!/bin/bash
# session 7, call 6: the final tree's cold start, timed phase by phase: two 20-step runs (save every 5) as the command
# starts them (EARLY=1), every Triton compile in the trainer's process logged
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PROBE_TRITON=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git status --short | head -30; } | tee $OUT/env.txt
R() { name=$1; code=$2; h=/tmp/c6-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "TL $(date +%s.%N) shell-start" > $OUT/tl_$name.txt
  (cd $code && env $3 PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 $OLDPWD/.carry/s7/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress >> $OUT/tl_$name.txt 2>&1)
  echo "TL $(date +%s.%N) shell-end" >> $OUT/tl_$name.txt; grep -E "time:" $OUT/tl_$name.txt | cut -c1-250; }
R F1 $PWD EARLY=1
R F2 $PWD EARLY=1
echo "== $(date -u +%T) end"
