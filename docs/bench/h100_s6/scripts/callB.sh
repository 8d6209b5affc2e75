#!/bin/bash
# session 6, call B: cold 20-step runs alternating today's start with the compile-worker pool warmed before
# torch.compile's imports (EARLY_POOL=1), every in-process Triton compile logged; then the data child's two parts alone
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD PROBE_TRITON=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; git log --oneline -1 | cut -c1-80; } | tee $OUT/env.txt
R() { name=$1; h=/tmp/cb-$name; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
  echo "TL $(date +%s.%N) shell-start" > $OUT/tl_$name.txt
  env $2 TINYLAB_HOME=$h/home TORCHINDUCTOR_CACHE_DIR=$h/inductor TRITON_CACHE_DIR=$h/triton \
    python3 .carry/s6/timeline.py --preset ittybitty --run tl --num-iterations 20 --no-progress >> $OUT/tl_$name.txt 2>&1
  echo "TL $(date +%s.%N) shell-end" >> $OUT/tl_$name.txt; grep -E "time:|shell-end|warm_up|compile_fx" $OUT/tl_$name.txt | cut -c1-250; }
R base1 X=1
R early1 EARLY_POOL=1
R base2 X=1
R early2 EARLY_POOL=1
h=/tmp/cb-child; rm -rf $h; mkdir -p $h/home/fineweb && cp .carry/fineweb/*.parquet $h/home/fineweb/
TINYLAB_HOME=$h/home nice -n 10 python3 -c "
import time; t0 = time.time()
from tinylab.presets import get_preset
import tinylab.tokens as tk
print('import', round(time.time() - t0, 2))
for mod, n in [(tk, 'pretokenize'), (tk, 'prepare_tokens')]:
    f = getattr(mod, n)
    def w(*a, _f=f, _n=n, **k):
        t = time.time(); r = _f(*a, **k); print(_n, a[2] if _n == 'pretokenize' else '', round(time.time() - t, 2), flush=True); return r
    setattr(mod, n, w)
tk.prepare_tokens(get_preset('ittybitty'), progress=False)
print('child total', round(time.time() - t0, 2))
" 2>&1 | tee $OUT/child_parts.txt
echo "== $(date -u +%T) end"
