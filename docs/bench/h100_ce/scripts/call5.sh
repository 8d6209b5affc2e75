#!/bin/bash
# issue 16, session 3, call 5: the real run end to end with --fp8-lm-head (cold caches); the lm_head kernels alone
# (bench.lm_head, with evaluation's losses-only kernel); a profile of the step.
set -o pipefail
SFX=fp8 E2E_ARGS=--fp8-lm-head bash .carry/e2e4.sh > /dev/null 2>&1; tail -4 $OUT/e2e.log | cut -c1-400
mv $OUT/e2e.log $OUT/e2e_fp8_cold.log; mv $OUT/e2e_metrics.jsonl $OUT/e2e_fp8_cold_metrics.jsonl; mv $OUT/env.txt $OUT/env_fp8.txt; rm -f $OUT/importtime.txt
export PYTHONPATH=/tmp/site:$PWD TINYLAB_HOME=/tmp/home PYTHONUNBUFFERED=1
echo "== $(date -u +%T) lm_head"; timeout 120 python3 -m tinylab.bench.lm_head --json $OUT/lm_head.jsonl > $OUT/lm_head.txt 2>&1; grep -E "kernel |device" $OUT/lm_head.txt
echo "== $(date -u +%T) profile"; timeout 120 python3 -m tinylab.bench profile --preset ittybitty --batch-sizes 48 > $OUT/profile.txt 2>&1; sed -n 1,14p $OUT/profile.txt | grep -v Warn
echo "== $(date -u +%T) end"
