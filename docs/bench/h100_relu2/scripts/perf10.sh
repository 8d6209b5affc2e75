#!/bin/bash
# 200-step loss A/B: the code before this session's changes, after (bf16, twice: bf16's own spread), after with FP8;
# then the 24 GiB fit of ittybitty's estimated largest batch.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home-ab
mkdir -p $TINYLAB_HOME/fineweb && cp .carry/fineweb/*.parquet $TINYLAB_HOME/fineweb/
T() { echo "== $(date -u +%T) $*"; }
AB() { name=$1; tree=$2; shift 2; T "ab $name"; (cd $tree && PYTHONPATH=/tmp/site:$PWD timeout 170 python3 -m tinylab.train --preset ittybitty --run ab-$name "$@" --num-iterations 200 --warmdown-ratio 0 --no-progress 2>&1 | tail -2); cp $TINYLAB_HOME/runs/ab-$name/metrics.jsonl $OUT/ab_$name.jsonl; }
AB before .carry/before
AB bf16 .
AB bf16-again .
AB fp8 . --fp8-lm-head
T fit; PYTHONPATH=/tmp/site:$PWD timeout 200 python3 -m tinylab.bench fit --preset ittybitty --batch-sizes 193,194 --gpu-mem-gb 24 2>&1 | tail -3 | tee $OUT/fit.txt
T end
