#!/bin/bash
# issue 16, session 3, call 3: step time of bf16 / FP8 / hybrid (logits bf16, backward FP8); 200-step loss A/B of
# bf16 twice, FP8, hybrid (seed 42); then each run's final weights measured by all three lm_heads on fixed batches.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home-ab
mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
T() { echo "== $(date -u +%T) $*"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
T steps; timeout 200 python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --steps 20 --loss chunked,chunked-fp8-bwd,chunked-fp8,chunked --json $OUT/steps_hybrid.jsonl 2>&1 | grep -v Warn | tail -8
AB() { name=$1; mode=$2; shift 2; T "ab $name"; timeout 170 python3 .carry/ab_run.py $mode --preset ittybitty --run ab-$name "$@" --num-iterations 200 --warmdown-ratio 0 --no-progress 2>&1 | tail -2; cp $TINYLAB_HOME/runs/ab-$name/metrics.jsonl $OUT/ab_$name.jsonl; }
AB bf16 plain
AB fp8 plain --fp8-lm-head
AB hybrid hybrid --fp8-lm-head
AB bf16-again plain
T measure; timeout 150 python3 .carry/fp8_measure.py ab-bf16 ab-fp8 ab-hybrid ab-bf16-again 2>&1 | grep -v Warn | tee $OUT/fp8_measure.txt
T end
