#!/bin/bash
# issue 16, session 3, call 7: the compile warm-up alone (compile_probe full: train forward, backward, eval; cold
# caches, no data thread), the code before (76a5bf3) and after, alternating; load and leftover processes before
# each; then the real run end to end (after, bf16, cold) as this machine's first run of it.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; lscpu | grep -E "Model name|^CPU\(s\)"; date -u; } | tee $OUT/env_probe.txt
P() { name=$1; tree=$2; i=$3; echo "== $(date -u +%T) $name $i; load $(cut -d' ' -f1-3 /proc/loadavg), python procs $(pgrep -c python3)"
  (cd $tree && TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$name-$i TRITON_CACHE_DIR=/tmp/tri-$name-$i PYTHONPATH=/tmp/site:$PWD timeout 120 python3 $OLDPWD/.carry/compile_probe.py full > $OUT/probe_${name}_$i.txt 2>&1); grep -E "warm-up total|first call|imports" $OUT/probe_${name}_$i.txt | tr '\n' ' '; echo; }
P before .carry/before2 1
P after . 1
P before .carry/before2 2
P after . 2
echo "== $(date -u +%T) e2e; load $(cut -d' ' -f1-3 /proc/loadavg), python procs $(pgrep -c python3)"
SFX=bf16b bash .carry/e2e4.sh > /dev/null 2>&1; tail -4 $OUT/e2e.log | cut -c1-300
echo "== $(date -u +%T) end; python procs $(pgrep -c python3)"
