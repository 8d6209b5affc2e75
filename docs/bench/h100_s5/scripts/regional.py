"""Probe: the whole model compiled as one graph ("model") or each Block compiled in place, one graph reused by
every layer, the rest eager ("blocks"). One process per run, fresh Inductor/Triton caches: cold compile time of the
training graph (first step) and the evaluation graph (first no-grad forward), then the step time."""
import sys, time, json
t0 = time.perf_counter()
import torch
from tinylab.bench.gpu import TrainStep, time_steps
import torch._inductor.compile_fx  # noqa: F401  (the trainer imports it up front too)
scope, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if scope == "nested":  # the whole model compiled, each Block a nested region traced and compiled once
    import tinylab.model as M
    M.Block.forward = torch.compiler.nested_compile_region(M.Block.forward)
step = TrainStep("ittybitty", 48, compile=scope in ("model", "nested"))
if scope == "blocks":
    for b in step.model.transformer.h:
        b.compile(dynamic=False)
t1 = time.perf_counter()
losses = [step().item()]
t2 = time.perf_counter()
x, y = step.tokens[0][:, :-1], step.tokens[0][:, 1:]
with torch.no_grad(), step.autocast:
    step.forward(x, y, loss_reduction="none")
torch.cuda.synchronize()
t3 = time.perf_counter()
for _ in range(4):
    losses.append(step().item())
times = sorted(time_steps(step, 2, 30))
from torch._dynamo.utils import counters
rec = dict(scope=scope, setup_s=t1 - t0, first_step_s=t2 - t1, eval_first_s=t3 - t2, step_ms=times[15] * 1e3,
           step_ms_min=times[0] * 1e3, losses=losses, stats=dict(counters["stats"]))
print(json.dumps(rec), flush=True)
open(out, "a").write(json.dumps(rec) + "\n")
