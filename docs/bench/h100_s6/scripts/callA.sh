#!/bin/bash
# session 6, call A: (1) the step on random vs real tokens, alternating, + a profile of each; (2) a cold 120-step real
# run with a timeline of every phase (startup, compile, exit); (3) a 250-step real run, data warm, for the loop's ms/step
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())"; date -u; git log --oneline -1 | cut -c1-80; nproc; } | tee $OUT/env.txt
h=/tmp/ca; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
export TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton
echo "TL $(date +%s.%N) shell-start" > $OUT/timeline_cold.txt
python3 .carry/s6/timeline.py --preset ittybitty --run tl --num-iterations 120 --no-progress >> $OUT/timeline_cold.txt 2>&1
echo "TL $(date +%s.%N) shell-end" >> $OUT/timeline_cold.txt
cat $OUT/timeline_cold.txt | cut -c1-250
cp $h/home/runs/tl/metrics.jsonl $OUT/tl_metrics.jsonl
echo "TL $(date +%s.%N) shell-start" > $OUT/timeline_warm.txt
python3 .carry/s6/timeline.py --preset ittybitty --run tl --overwrite --num-iterations 250 --no-progress >> $OUT/timeline_warm.txt 2>&1
echo "TL $(date +%s.%N) shell-end" >> $OUT/timeline_warm.txt
grep -v "evaluate\|Trainer.save" $OUT/timeline_warm.txt | cut -c1-250
cp $h/home/runs/tl/metrics.jsonl $OUT/tl250_metrics.jsonl
python3 -c "
import json
for f in ['$OUT/tl_metrics.jsonl', '$OUT/tl250_metrics.jsonl']:
    tr = [json.loads(l) for l in open(f)]; tr = [r for r in tr if r['kind'] == 'train']
    print(f, [round(491520 / r['tok_per_s'] * 1e3, 1) for r in tr])"
python3 .carry/s6/step_tokens.py $(ls -d $h/home/tokens/fineweb-*) $OUT 2>&1 | grep -v Warn | head -60
echo "== $(date -u +%T) end"
