#!/bin/bash
# issue 16, session 3, call 1: loss kernel variants; where the compile's 30 s go (cold / warm / regional); a trace.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYLAB_HOME=/tmp/home
T() { echo "== $(date -u +%T) $*"; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; nproc; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
T ce; timeout 120 python3 .carry/ce_sweep.py 2>&1 | tee $OUT/ce_sweep.txt | grep -v Warn
cold() { export TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$1 TRITON_CACHE_DIR=/tmp/tri-$1; }
T full-cold; cold a; timeout 150 python3 .carry/compile_probe.py full > $OUT/compile_full_cold.txt 2>&1; grep "^\[" $OUT/compile_full_cold.txt
T full-warm; cold a; timeout 150 python3 .carry/compile_probe.py full > $OUT/compile_full_warm.txt 2>&1; grep "^\[" $OUT/compile_full_warm.txt
T kernels-cold; cold b; timeout 150 python3 .carry/compile_probe.py kernels > $OUT/compile_kernels_cold.txt 2>&1; grep "^\[" $OUT/compile_kernels_cold.txt
T regional-cold; cold c; timeout 150 python3 .carry/compile_probe.py regional > $OUT/compile_regional_cold.txt 2>&1; grep "^\[" $OUT/compile_regional_cold.txt
T profile; cold a; timeout 120 python3 -m tinylab.bench profile --preset ittybitty --batch-sizes 48 --trace $OUT/trace.json > $OUT/profile.txt 2>&1; sed -n 1,14p $OUT/profile.txt; gzip $OUT/trace.json; ls -la $OUT
T end
