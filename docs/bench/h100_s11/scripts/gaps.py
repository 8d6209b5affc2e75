"""Session 11: where the GPU idles within a step. (1) The step timed as time_steps does (a host sync after each step)
against N steps queued back to back (events only, one sync at the end), alternating; (2) a profiled step's
chrome trace: the gaps between consecutive GPU kernels, summed, and the largest with their neighbours."""
import json
import statistics
import sys

import torch

from tinylab.bench.gpu import TrainStep, time_steps, profile_step

out = sys.argv[1]
step = TrainStep("ittybitty", 48)
for _ in range(5):
    step()
torch.cuda.synchronize()


def queued(n):
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    ev[0].record()
    for i in range(n):
        step()
        ev[i + 1].record()
    torch.cuda.synchronize()
    return [ev[i].elapsed_time(ev[i + 1]) for i in range(n)]


for rep in range(3):
    synced = [t * 1e3 for t in time_steps(step, 0, 10)]
    q = queued(10)
    print(f"rep {rep}: synced each step {statistics.median(synced):.2f} ms, queued {statistics.median(q):.2f} ms "
          f"(mean {sum(q) / len(q):.2f})", flush=True)
del step
torch._dynamo.reset()
profile_step("ittybitty", 48, f"{out}/trace.json")
trace = json.load(open(f"{out}/trace.json"))
kernels = sorted((e for e in trace["traceEvents"] if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                 key=lambda e: e["ts"])
gaps = []
for a, b in zip(kernels, kernels[1:]):
    gap = b["ts"] - (a["ts"] + a["dur"])
    if gap > 0:
        gaps.append((gap, a["name"][:60], b["name"][:60]))
span = kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]
busy = sum(e["dur"] for e in kernels)
print(f"kernels {len(kernels)}, span {span / 1e3:.2f} ms, busy {busy / 1e3:.2f} ms, gaps {sum(g for g, *_ in gaps) / 1e3:.2f} ms "
      f"({sum(1 for g, *_ in gaps if g > 20)} over 20 us, {sum(g for g, *_ in gaps if g > 20) / 1e3:.2f} ms)")
for g, a, b in sorted(gaps, reverse=True)[:25]:
    print(f"  {g:8.1f} us  after {a}  before {b}")
import os
os.remove(f"{out}/trace.json")
