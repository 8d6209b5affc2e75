#!/bin/bash
# issue 16, session 3, call 4: the real run end to end in bf16 (cold caches), then the GPU test suite.
set -o pipefail
SFX=bf16 bash .carry/e2e4.sh > /dev/null 2>&1; tail -4 $OUT/e2e.log | cut -c1-400
mv $OUT/e2e.log $OUT/e2e_bf16_cold.log; mv $OUT/e2e_metrics.jsonl $OUT/e2e_bf16_cold_metrics.jsonl; mv $OUT/env.txt $OUT/env_bf16.txt
export PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=/tmp/home PYTHONUNBUFFERED=1
echo "== $(date -u +%T) gpu tests"; timeout 200 python3 -m pytest -o addopts="" -q -m gpu tests/gpu -p no:logging 2>&1 > $OUT/pytest_gpu.txt; grep -E "^E  |^FAILED|passed|failed" $OUT/pytest_gpu.txt | head -20
echo "== $(date -u +%T) end"
