"""ittybitty training steps (bench_train, batch 48), alternating in one process: torch.compile's default mode and
mode="reduce-overhead" (CUDA graphs)."""
import functools, json, sys, torch
from contextlib import nullcontext
import tinylab.bench.gpu as G
from tinylab.bench.gpu import bench_train, matmul_tflops
orig = torch.compile
def train_step_cg(net, optimizers, batches, grad_accum, *, autocast, grad_clip, model):
    """tinylab.train.train_step, each micro-batch's loss cloned: CUDA graphs overwrite a graph's outputs when it
    replays."""
    total = None
    for micro in range(grad_accum):
        x, y = next(batches)
        torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            loss = net(x, y)
        (loss / grad_accum).backward()
        total = loss.detach().clone() if total is None else total + loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return total / grad_accum
real_step = G.train_step
peak = matmul_tflops()
print(f"bf16 matmul ceiling: {peak:.0f} TFLOP/s", flush=True)
for name, mode in [("default", None), ("reduce-overhead", "reduce-overhead")] * 2:
    torch.compile = functools.partial(orig, mode=mode) if mode else orig
    G.train_step = train_step_cg if mode else real_step
    try:
        row = bench_train("ittybitty", 48, compile=True, loss="chunked", residual="bf16", warmup=3, steps=20, peak_tflops=peak)
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {str(e)[:300]}", flush=True); continue
    row.update(case=name)
    print(f"{name:16s} {row['step_ms']:7.1f} ms  {row['tok_per_s']:,.0f} tok/s  MFU {100 * row['mfu']:.1f}%  "
          f"spread {row['step_ms_spread']:.1f} ms  peak {row['peak_allocated_mib']:,.0f} MiB", flush=True)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(row) + "\n")
