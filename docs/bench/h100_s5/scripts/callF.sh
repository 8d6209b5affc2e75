#!/bin/bash
# session 5, call F: compile by region (kept code, working tree) against HEAD 5a58d61 (whole-model compile):
# step time in one bench process (regions, model, regions, model), then 20-step ittybitty runs, cold caches, alternating.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
PYTHONPATH=/tmp/site:$PWD python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --compile-scope regions,model,regions,model --json $OUT/train_scope.jsonl 2>&1 | tail -7
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
R() { name=$1; code=$2; h=/tmp/cf-$name; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  (cd $code && PYTHONPATH=/tmp/site:$code python3 -c "import tinylab.model as m; print('$name', m.__file__, hasattr(m, 'CompiledRegions'))")
  echo "$(date +%s.%N) START" > $OUT/short_$name.log
  (cd $code && PYTHONPATH=/tmp/site:$code TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    /usr/bin/time -f "wall %e s, max rss %M KB" timeout 150 python3 -m tinylab.train --preset ittybitty --run s-$name --num-iterations 20 --no-progress 2>&1 | stamp >> $OUT/short_$name.log)
  echo "$(date +%s.%N) END" >> $OUT/short_$name.log; grep -E "time:|wall" $OUT/short_$name.log | cut -c1-300; }
R regions1 $PWD
R before1 $PWD/.carry/s5/before
R regions2 $PWD
R before2 $PWD/.carry/s5/before
echo "== $(date -u +%T) end"
