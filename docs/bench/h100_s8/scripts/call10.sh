#!/bin/bash
# session 8, call 10: does torch._dynamo.reset() in compile_model cost the command's start-up? 20-step cold runs
# without bytecode (as this machine runs Python), alternating: A = reset on every compile_model call (commit 1fcd1cb),
# B = the working tree (reset from the second call on, so never in the command)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git status --short | head; } | tee $OUT/env.txt
R() { name=$1; h=/tmp/c10-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "$name TL $(date +%s.%N) shell-start" >> $OUT/tl.txt
  (env $2 EARLY=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    timeout 120 python3 .carry/s8/timeline.py --preset ittybitty --run tl --num-iterations 20 --save-every 5 --no-progress 2>&1 | sed "s/^/$name /" >> $OUT/tl.txt)
  echo "$name TL $(date +%s.%N) shell-end" >> $OUT/tl.txt; grep -E "^$name (time:|TL .* (dynamo-reset|Trainer.build_forward))" $OUT/tl.txt | cut -c1-250; }
for i in 1 2 3; do
  R A$i RESET_ALWAYS=1
  R B$i X=1
done
echo "== $(date -u +%T) end"
