#!/bin/bash
# session 8, call 6: the data child's phases knob by knob: rustbpe's buffer_size and thread count; the pre-tokenizer's
# thread count
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=/tmp/c6
{ nvidia-smi --query-gpu=name --format=csv,noheader; date -u; nproc; lscpu | grep -E "Model name|Thread|Core|Socket|MHz" ; } | tee $OUT/env.txt
rm -rf /tmp/c6; mkdir -p /tmp/c6/fineweb && cp .carry/fineweb/*.parquet /tmp/c6/fineweb/
for cfg in "16 8192" "16 65536" "8 65536" "4 65536" "16 2048" "2 65536" "8 8192"; do set -- $cfg
  RAYON_NUM_THREADS=$1 timeout 60 python3 .carry/s8/tok_probe.py tok $2 2>&1 | sed "s/^/threads $1 /" | tee -a $OUT/tok_probe.txt; done
timeout 60 python3 .carry/s8/tok_probe.py pre 16 > /dev/null 2>&1  # trains and saves the tokenizer once
for n in 16 8 4 32 16; do timeout 60 python3 .carry/s8/tok_probe.py pre $n 2>&1 | tee -a $OUT/tok_probe.txt; done
echo "== $(date -u +%T) end"
