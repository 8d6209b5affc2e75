#!/bin/bash
# session 8, call 5: the data child's work alone (tokenizer training, then pre-tokenization), cold, twice; then once
# with the tokenizer's threads capped (RAYON_NUM_THREADS=4) to see how it scales
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name --format=csv,noheader; date -u; nproc; } | tee $OUT/env.txt
P() { h=/tmp/c5-$1; rm -rf $h; mkdir -p $h/fineweb && cp .carry/fineweb/*.parquet $h/fineweb/
  echo "== $1 $2" | tee -a $OUT/child_probe.txt; env $2 TINYLAB_HOME=$h timeout 100 python3 .carry/s8/child_probe.py 2>&1 | tee -a $OUT/child_probe.txt; }
P a X=1
P b X=1
P c RAYON_NUM_THREADS=4
echo "== $(date -u +%T) end"
