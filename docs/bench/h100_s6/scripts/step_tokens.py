"""Session 6 probe: the bench's step on random tokens against the same step on real FineWeb tokens (the run's
tokenizer), alternating in one process, then one profiled step of each: does the data change the step's time?"""
import json, statistics, sys, time
import numpy as np, torch
from tinylab.bench.gpu import TrainStep, time_steps
import glob
a = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in sorted(glob.glob(sys.argv[1] + "/shard_0000[0-2].bin"))])
n = 10 * 5 * 48 * 2049
real = torch.from_numpy(a[:n].astype(np.int64)).view(10, 5, 48, 2049).cuda()  # the run's own tokens, contiguous
out = sys.argv[2]
step = TrainStep("ittybitty", 48)
rand = step.tokens
def use(kind, i=0):
    step.tokens = rand if kind == "random" else real[i % real.shape[0]]
class Cycle:
    def __init__(self, kind): self.kind, self.i = kind, 0
    def __call__(self):
        use(self.kind, self.i); self.i += 1; return step()
t = time.time(); step(); torch.cuda.synchronize(); print(f"compile {time.time() - t:.1f} s", flush=True)
rows = []
for kind in ["random", "real", "random", "real", "random", "real"]:
    times = time_steps(Cycle(kind), 3, 20)
    r = dict(tokens=kind, step_ms=statistics.median(times) * 1e3, spread_ms=(max(times) - min(times)) * 1e3,
             mean_ms=statistics.mean(times) * 1e3)
    rows.append(r); print(json.dumps(r), flush=True)
with open(f"{out}/step_tokens.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
from torch.profiler import profile, ProfilerActivity
for kind in ["random", "real"]:
    c = Cycle(kind)
    for _ in range(3): c()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        c(); torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
    open(f"{out}/profile_{kind}.txt", "w").write(table)
    print(kind, "\n", table[:6000], flush=True)
