#!/bin/bash
# session 5, call D: flash-attn-4 in the training step (probe custom op) against SDPA, alternating in one process
set -o pipefail
export PYTHONUNBUFFERED=1
rm -rf /tmp/fa4site; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fa4site .carry/fa4b/*.whl || exit 1
cat .carry/fa4a/cu13.part00 .carry/fa4b/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/fa4site || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
python3 .carry/s5/fa4_step.py $OUT/fa4_step.jsonl 2>&1 | grep -v "Warning\|exe_args" | tail -20
echo "== $(date -u +%T) end"
