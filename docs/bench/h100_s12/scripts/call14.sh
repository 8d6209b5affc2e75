#!/bin/bash
# session 12, call 14 (same machine as call 13): the library unpacked; the GPU tests that failed in call 12, with
# their tracebacks; then the 200-step loss curves (seed 42, the docs corpus' first 5 shards): tinylab's Triton
# kernels (quack not importable) against tinylab.cute (quack importable), each twice, alternating, one TINYLAB_HOME
set -o pipefail
export PYTHONUNBUFFERED=1
cat /tmp/qs/cu13.part00 .carry/q2/cu13.part01 | xz -d -T8 | tar xf - -C /tmp/qs/site-packages || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/s11/whl/*.whl 2>/dev/null
Q=/tmp/qs/site-packages:/tmp/qs/site-packages/nvidia_cutlass_dsl/dsl_packages
export QUACK_CACHE_DIR=/tmp/quackcache
git log --oneline -1 | cut -c1-80 | tee $OUT/env.txt
PYTHONPATH=$Q:$PWD timeout 200 python3 -m pytest -o addopts="" -q -p no:cacheprovider -p no:logging --show-capture=no --tb=short -rf tests/gpu -k "precompile or resume_on_cuda or scaled_exp" 2>&1 | grep -v "Warning\|warn\|from cutlass\|LayoutEnum\|^$\|^tests/gpu/.*\]$" | cut -c1-300 > $OUT/pytest_failed.txt; tail -5 $OUT/pytest_failed.txt
h=/tmp/ab; mkdir -p $h/home/fineweb && cp -n .carry/fw5/*.parquet $h/home/fineweb/
for run in triton1 cute1 triton2 cute2; do
  case $run in triton*) P=/tmp/site:$PWD;; *) P=/tmp/site:$Q:$PWD;; esac
  PYTHONPATH=$P TINYLAB_HOME=$h/home timeout 150 python3 -m tinylab.train --preset ittybitty --num-shards 5 --run ab-$run --num-iterations 200 --warmdown-ratio 0 --no-progress 2>&1 | grep -E "time:|val bpb|error" | tail -3
  cp $h/home/runs/ab-$run/metrics.jsonl $OUT/ab_$run.jsonl
done
echo "== $(date -u +%T) end"
