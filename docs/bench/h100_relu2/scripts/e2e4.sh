#!/bin/bash
# issue 16, call 2: the real ittybitty run end to end, cold caches, every output line time-stamped
# (start -> first line: interpreter, imports, CUDA; last line -> exit), then the import profile.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home-cold$SFX TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cold$SFX TRITON_CACHE_DIR=/tmp/triton-cold$SFX
mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1; } | tee $OUT/env.txt
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
echo "$(date +%s.%N) START" > $OUT/e2e.log
/usr/bin/time -f "wall %e s, max rss %M KB" timeout 480 python3 -m tinylab.train --preset ittybitty --run e2e$SFX $E2E_ARGS \
  --no-progress 2>&1 | stamp | tee -a $OUT/e2e.log
echo "$(date +%s.%N) END" >> $OUT/e2e.log
cp $TINYLAB_HOME/runs/e2e$SFX/metrics.jsonl $OUT/e2e_metrics.jsonl
python3 -X importtime -c "import tinylab.train" 2> $OUT/importtime.txt
/usr/bin/time -f "import tinylab.train + CUDA init: %e s" python3 -c "import tinylab.train, torch; torch.zeros(1, device='cuda')" 2>&1 | tee -a $OUT/env.txt
