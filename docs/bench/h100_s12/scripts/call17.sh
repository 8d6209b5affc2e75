#!/bin/bash
# session 12, call 17 (same machine as call 16): the library unpacked; bench check (every loss implementation's
# gradients against materialised logits, one 4 × 2048 batch of ittybitty) with quack importable
set -o pipefail
export PYTHONUNBUFFERED=1
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
Q=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages
PYTHONPATH=$Q:$PWD QUACK_CACHE_DIR=/tmp/quackcache python3 -m tinylab.bench check --preset ittybitty 2>&1 | grep -v "Warning\|warn\|from cutlass\|LayoutEnum\|block_copy" | tail -8 | tee $OUT/check.txt
