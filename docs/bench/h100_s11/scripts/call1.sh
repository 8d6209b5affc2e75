#!/bin/bash
# session 11, call 1: the loss kernel's second read from L2 (variants), SDPA's layouts, today's step
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; nproc; } | tee $OUT/env.txt
timeout 150 python3 .carry/s11/ce_l2.py $OUT 2>&1 | grep -v Warning | tee $OUT/ce_l2.txt
timeout 100 python3 .carry/s11/sdpa_layout.py $OUT 2>&1 | grep -v Warning | tail -8
timeout 240 python3 -m tinylab.bench train --preset ittybitty --batch-sizes 48 --steps 20 --json $OUT/train_baseline.jsonl 2>&1 | grep -v Warning | tail -6
