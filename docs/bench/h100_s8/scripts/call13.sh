#!/bin/bash
# session 8, call 13: the final tree (forget_compiled once, before the trainer starts any thread): the GPU suite
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git status --short | head; } | tee $OUT/env.txt
PYTHONPATH=/tmp/site:$PWD timeout 300 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging -p no:cacheprovider 2>&1 | tail -4 | tee $OUT/pytest_gpu.txt
R() { name=$1; h=/tmp/c13-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$name TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
  (env $2 EARLY=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 .carry/s8/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/$name /" >> $OUT/tl.txt)
  echo "$name TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^$name (time:|done)" $OUT/tl.txt | cut -c1-250; }
echo "== $(date -u +%T) end"
