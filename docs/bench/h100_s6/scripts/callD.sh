#!/bin/bash
# session 6, call D: the GPU suite on the working tree; then cold 20-step runs alternating the working tree with
# Inductor's worker pool (B) and without it (E: TORCHINDUCTOR_COMPILE_THREADS=1); stray processes after
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
timeout 300 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider > $OUT/pytest_gpu.txt 2>&1; grep -E "^E  |^FAILED|passed|failed" $OUT/pytest_gpu.txt | head -20
R() { name=$1; h=/tmp/cd-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "TL $(date +%s.%N) shell-start" > $OUT/tl_$name.txt
  env $2 PROBE_TRITON=1 TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    python3 .carry/s6/timeline.py --preset ittybitty --run tl --num-iterations 20 --no-progress >> $OUT/tl_$name.txt 2>&1
  echo "TL $(date +%s.%N) shell-end" >> $OUT/tl_$name.txt; grep -E "time:" $OUT/tl_$name.txt | cut -c1-250; }
for i in 1 2; do R B$i X=1; R E$i TORCHINDUCTOR_COMPILE_THREADS=1; done
sleep 1; echo "processes left:"; ps -eo pid,ppid,etimes,cmd | grep -E "compile_worker|tinylab" | grep -v grep | cut -c1-150
echo "== $(date -u +%T) end"
