#!/bin/bash
# issue 16, session 4, call 1: FP8 with the e5m2 gradient rounded stochastically. Step time alternating (bf16, FP8
# nearest, FP8 stochastic); 200-step loss A/B (seed 42): bf16 twice, FP8 nearest, FP8 stochastic twice; then each
# run's final weights measured by the bf16 lm_head on fixed batches.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home-ab
mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
T() { echo "== $(date -u +%T) $*"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
T steps; timeout 170 python3 .carry/s4/steps_sr.py $OUT/steps_sr.jsonl 2>&1 | grep -v Warn | tail -8
AB() { name=$1; mode=$2; shift 2; T "ab $name"; timeout 110 python3 .carry/s4/ab_run.py $mode --preset ittybitty --run ab-$name "$@" --num-iterations 200 --warmdown-ratio 0 --no-progress 2>&1 | tail -1 | cut -c1-200; cp $TINYLAB_HOME/runs/ab-$name/metrics.jsonl $OUT/ab_$name.jsonl; }
AB bf16 plain
AB fp8-sr sr --fp8-lm-head
AB fp8 rtn --fp8-lm-head
AB bf16-again plain
T measure; timeout 60 python3 .carry/s4/fp8_measure.py ab-bf16 ab-bf16-again ab-fp8 ab-fp8-sr 2>&1 | grep -v Warn | tee $OUT/fp8_measure.txt
AB fp8-sr-again sr --fp8-lm-head
timeout 30 python3 .carry/s4/fp8_measure.py ab-fp8-sr-again 2>&1 | grep -v Warn | tail -1 | tee -a $OUT/fp8_measure.txt
T end
