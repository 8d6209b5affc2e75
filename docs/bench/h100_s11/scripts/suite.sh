#!/bin/bash
# session 11: make test's command (the whole suite: unit tests, nbval over the notebooks, the GPU tests) on an H100
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; nproc; } | tee $OUT/env.txt
timeout 570 python3 -m pytest -rs -p no:cacheprovider 2>&1 | tail -60 > $OUT/pytest_full.txt
tail -12 $OUT/pytest_full.txt
