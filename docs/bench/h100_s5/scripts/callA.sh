#!/bin/bash
# session 5, call A: environment, the carried first half of cutlass-dsl's CUDA 13 library, today's step time (baseline)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 --version; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())"; date -u; git log --oneline -1 | cut -c1-80; ls -la .carry/fa4a; } | tee $OUT/env.txt
python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --json $OUT/train_baseline.jsonl 2>&1 | tail -5
echo "== $(date -u +%T) end"
