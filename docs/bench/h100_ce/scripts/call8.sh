#!/bin/bash
# issue 16, session 3, call 8: the cold warm-up with Inductor's compile workers started at import time (WARM_POOL=1)
# against started by the first graph (torch's default), alternating; then how long the pool takes to be ready.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
P() { name=$1; i=$2; echo "== $(date -u +%T) $name $i"
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$name-$i TRITON_CACHE_DIR=/tmp/tri-$name-$i timeout 120 python3 .carry/compile_probe.py full > $OUT/probe_${name}_$i.txt 2>&1; grep -E "warm-up total|first call|imports" $OUT/probe_${name}_$i.txt | tr '\n' ' '; echo; }
P default 1
WARM_POOL=1 P pool 1
P default 2
WARM_POOL=1 P pool 2
echo "== pool start-up"; TORCHINDUCTOR_CACHE_DIR=/tmp/ind-x python3 -c "
import time; import torch._inductor.compile_fx
from torch._inductor.async_compile import maybe_warm_pool, AsyncCompile
t = time.perf_counter(); maybe_warm_pool(); t1 = time.perf_counter(); AsyncCompile.wait_pool_ready(); t2 = time.perf_counter()
print(f'maybe_warm_pool {t1 - t:.2f} s (main thread), ready after {t2 - t:.2f} s')" 2>&1 | tail -1 | tee $OUT/pool_startup.txt
echo "== $(date -u +%T) end"
