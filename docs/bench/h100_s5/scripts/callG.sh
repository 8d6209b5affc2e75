#!/bin/bash
# session 5, call G: profile of one step, compiled by region and as a whole model; run_samples' cost
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry/sweep-wheels/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 .carry/s5/sample_probe.py 2>&1 | tail -5
for scope in regions model; do
  python3 -m tinylab.bench profile --preset ittybitty --batch-sizes 48 --compile-scope $scope > $OUT/profile_$scope.txt 2>&1; head -14 $OUT/profile_$scope.txt
done
echo "== $(date -u +%T) end"
