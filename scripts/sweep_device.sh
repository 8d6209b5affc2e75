#!/usr/bin/env bash
# Run a sweep spec on a GPU machine in one command and pack its results for docs/sweeps/.
#
#   bash scripts/sweep_device.sh docs/sweeps/arch-questions/spec.json [tinylab.sweep flags, e.g. --devices 0,1]
#
# The sweep is named after the spec's directory. The corpus comes from .carry/fineweb/shard_*.parquet
# (FineWeb-Edu's layout, the last shard is validation), linked in as $TINYLAB_HOME/fineweb (default
# TINYLAB_HOME: data/ of this checkout). Every GPU visible trains one point at a time (tinylab.sweep).
# Into $OUT (default out/) go three files:
#   <sweep>.tar.gz   the sweep directory without checkpoints and tokenizers: spec.json, results.csv,
#                    logs/, and each point's config.json + metrics.jsonl. Publish it with
#                    tar -xzf <sweep>.tar.gz -C docs/sweeps/
#   results.csv      the results table, for a quick look
#   sweep.log        the plan, one line per finished point, timings
# The sweep stops after SWEEP_SECONDS (default 540) so the packing always happens within a 10-minute
# slot; it is resumable, so the same command on the same machine finishes what is left.
set -u
spec=${1:?usage: scripts/sweep_device.sh SPEC.json [tinylab.sweep flags]}
shift
name=$(basename "$(dirname "$spec")")
out=${OUT:-out}
python=${PYTHON:-python3}
export TINYLAB_HOME=${TINYLAB_HOME:-$PWD/data}
mkdir -p "$out" "$TINYLAB_HOME"
[ -e "$TINYLAB_HOME/fineweb" ] || ln -s "$PWD/.carry/fineweb" "$TINYLAB_HOME/fineweb"
{
  echo "sweep $name on $(hostname), $(date -u +%FT%TZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__)"
} 2>&1 | tee "$out/sweep.log"
start=$SECONDS
timeout -k 20 "${SWEEP_SECONDS:-540}" "$python" -m tinylab.sweep "$name" --spec "$spec" --no-progress "$@" 2>&1 |
  tee -a "$out/sweep.log"
status=${PIPESTATUS[0]}
case $status in 0) why="every point done" ;; 124|137) why="stopped by the time limit" ;; *) why="see the errors above" ;; esac
echo "tinylab.sweep exit status $status after $((SECONDS - start)) s: $why" | tee -a "$out/sweep.log"
tar -czf "$out/$name.tar.gz" -C "$TINYLAB_HOME/runs" --exclude=checkpoints --exclude=tokenizer --exclude=.lock "$name"
cp "$TINYLAB_HOME/runs/$name/results.csv" "$out/" 2>/dev/null
ls -l "$out"
