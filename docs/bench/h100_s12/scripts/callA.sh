#!/bin/bash
# session 12, call 3: the small wheels installed into /tmp/qs/site-packages, the library's first half kept for call 4
set -o pipefail
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
rm -rf /tmp/qs; mkdir -p /tmp/qs && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/qs/site-packages .carry/q1/whl/*.whl || exit 1
cp .carry/q1/cu13.part00 /tmp/qs/ && ls -la /tmp/qs
