#!/bin/bash
# issue 16, session 3, call 2: the loss kernel's tile (alone and in the step), lm_head chunk size, the compile with
# evaluation's op (cold), regional compile (cold) and both compiled steps' speed.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home
T() { echo "== $(date -u +%T) $*"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; git status --short | head; } | tee $OUT/env.txt
T ce; timeout 150 python3 .carry/ce_sweep2.py 2>&1 | tee $OUT/ce_tile_sweep.txt | grep -v Warn
cold() { export TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$1 TRITON_CACHE_DIR=/tmp/tri-$1; }
T full-cold; cold a; timeout 150 python3 .carry/compile_probe.py full > $OUT/compile_full_cold.txt 2>&1; grep "^\[" $OUT/compile_full_cold.txt
T regional-cold; cold c; timeout 150 python3 .carry/compile_probe.py regional > $OUT/compile_regional_cold.txt 2>&1; grep "^\[" $OUT/compile_regional_cold.txt
T steps; cold a; timeout 330 python3 .carry/step_ab.py $OUT/steps_ce_tile.jsonl 2>&1 | grep -v Warn | tee $OUT/steps_ce_tile.txt
T end
