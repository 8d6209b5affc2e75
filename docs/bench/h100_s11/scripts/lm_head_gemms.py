"""Session 11: the lm_head chunk's three GEMMs in other layouts (cuBLAS picks its kernel by layout and shape).
One 8192-token chunk at ittybitty's shape (d 512, V 24,576), bf16, alternating, one process.

Today: logits = x @ wᵀ (318 us), dx = g @ w (348 us, 593 TFLOP/s: the slowest of the three), dW += gᵀ @ x into
fp32 (291 us). Prediction: dx computed as (wᵀ @ gᵀ)ᵀ, or with a transposed copy of w, lands on a kernel near the
logits GEMM's rate: -20 to -30 us a chunk, -1.2 to -1.8 ms a step.
"""
import statistics
import sys

import torch

N, V, D = 8192, 24576, 512


def timed(fn, reps=25):
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    out = []
    for _ in range(reps):
        ev[0].record(); fn(); ev[1].record(); torch.cuda.synchronize()
        out.append(ev[0].elapsed_time(ev[1]) * 1e3)
    return out


def main(out):
    torch.manual_seed(0)
    x = torch.randn(N, D, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(V, D, device="cuda", dtype=torch.bfloat16) * 0.05
    wt = w.t().contiguous()  # (D, V)
    g = torch.randn(N, V, device="cuda", dtype=torch.bfloat16) * 1e-3
    gx = torch.empty(N, D, device="cuda", dtype=torch.bfloat16)
    gxt = torch.empty(D, N, device="cuda", dtype=torch.bfloat16)
    gw = torch.zeros(V, D, device="cuda", dtype=torch.float32)
    gwt = torch.zeros(D, V, device="cuda", dtype=torch.float32)
    logits = torch.empty(N, V, device="cuda", dtype=torch.bfloat16)
    cases = {
        "logits x @ w.t() (today)": lambda: torch.mm(x, w.t(), out=logits),
        "logits x @ wt (w transposed, contiguous)": lambda: torch.mm(x, wt, out=logits),
        "dx g @ w (today)": lambda: torch.mm(g, w, out=gx),
        "dx g @ wt.t()": lambda: torch.mm(g, wt.t(), out=gx),
        "dx (w.t() @ g.t()) into (D, N)": lambda: torch.mm(w.t(), g.t(), out=gxt),
        "dx (wt @ g.t()) into (D, N)": lambda: torch.mm(wt, g.t(), out=gxt),
        "dW += g.t() @ x, fp32 out (today)": lambda: torch.addmm(gw, g.t(), x, out_dtype=torch.float32, out=gw),
        "dWt += x.t() @ g, fp32 out": lambda: torch.addmm(gwt, x.t(), g, out_dtype=torch.float32, out=gwt),
    }
    ref = {}
    torch.mm(g, w, out=gx); ref["dx"] = gx.clone()
    torch.mm(w.t(), g.t(), out=gxt)
    print("dx transposed equals:", torch.allclose(gxt.t(), ref["dx"], rtol=1e-2, atol=1e-3))
    times = {k: [] for k in cases}
    for _ in range(3):
        for k, fn in cases.items():
            times[k] += timed(fn, reps=10)
    flops = 2 * N * V * D
    with open(f"{out}/lm_head_gemms.txt", "w") as f:
        for k, t in times.items():
            line = f"{k:45s} {statistics.median(t):7.1f} us (min {min(t):6.1f})  {flops / statistics.median(t) / 1e6:5.0f} TFLOP/s"
            print(line)
            f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
