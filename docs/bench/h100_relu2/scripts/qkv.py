"""q, k, v projections: three Linear vs one GEMM on the concatenated weight, fwd + bwd, compiled, bf16 autocast."""
import torch, torch.nn.functional as F
N, d = 48 * 2048, 512
x = torch.randn(N, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
ws = [torch.randn(d, d, device="cuda", requires_grad=True) for _ in range(3)]
gs = [torch.randn(N, d, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
def three(x, wq, wk, wv):
    return F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)
def fused(x, wq, wk, wv):
    return F.linear(x, torch.cat([wq, wk, wv])).split(d, dim=-1)
def t(fn, n=30):
    def step():
        with torch.autocast("cuda", torch.bfloat16):
            outs = fn(x, *ws)
        torch.autograd.backward(outs, gs)
    for _ in range(5): step()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): step()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n
for name, fn in [("three", three), ("fused", fused), ("three", three), ("fused", fused)]:
    print(f"{name}: {t(torch.compile(fn)):.3f} ms fwd+bwd per layer·micro-batch", flush=True)
