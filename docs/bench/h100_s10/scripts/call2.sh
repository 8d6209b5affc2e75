#!/bin/bash
# session 10, call 2: the final tree: make test's command on a CUDA machine (the whole suite: unit tests, nbval over
# the seven notebooks, the GPU tests), with the Jupyter stack and rustbpe carried as wheels
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; date -u; git log --oneline -1 | cut -c1-80; nproc; } | tee $OUT/env.txt
timeout 560 python3 -m pytest -rs -p no:cacheprovider 2>&1 | tail -60 > $OUT/pytest_full.txt
tail -12 $OUT/pytest_full.txt
