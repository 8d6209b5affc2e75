"""Session 8: can the lm_head's memory-bound loss kernel run alongside its compute-bound GEMMs?
One micro-batch of ittybitty's lm_head (98,304 tokens, 12 chunks of 8,192): today's sequential chunk loop against a
two-stream pipeline (the chunk's loss kernel on a side stream while the main stream runs the next chunk's logits GEMM,
then this chunk's dx and dW GEMMs), with cuBLAS told to leave `carveout` SMs free (torch._C._set_sm_carveout_experimental)
for the GEMMs that overlap the loss kernel ("L": the logits GEMM only; "all": every GEMM)."""
import sys
import torch
from tinylab import kernels as tk
from tinylab.loss import _accumulate

torch.manual_seed(0)
N, d, V, C, cap = 98304, 512, 24576, 8192, 15.0
x = torch.randn(N, d, device="cuda").bfloat16()
w = (torch.randn(V, d, device="cuda") * d ** -0.5).bfloat16()
targets = torch.randint(0, V, (N,), device="cuda")
targets[::97] = -1
side = torch.cuda.Stream()
hi = torch.cuda.Stream(priority=-1)


def sequential():
    grad_x = torch.empty_like(x)
    grad_w = torch.zeros(V, d, device="cuda", dtype=torch.float32)
    loss = torch.zeros((), device="cuda")
    for s in range(0, N, C):
        logits = x[s:s + C] @ w.t()
        loss += tk.softcap_cross_entropy_(logits, targets[s:s + C], cap).sum()
        torch.mm(logits, w, out=grad_x[s:s + C])
        _accumulate(grad_w, logits.t(), x[s:s + C])
    return loss, grad_x, grad_w


def carve(n):
    torch._C._set_sm_carveout_experimental(n or None)


def pipelined(carveout, scope, main=None):
    caller = torch.cuda.current_stream()
    main = main or caller
    main.wait_stream(caller)
    with torch.cuda.stream(main):
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(V, d, device="cuda", dtype=torch.float32)
        losses = torch.empty(N, device="cuda")
        n = N // C
        carve(carveout)
        nxt = x[0:C] @ w.t()
        ready = torch.cuda.Event(); ready.record(main)
        for i in range(n):
            s = i * C
            logits, written = nxt, ready
            side.wait_event(written)  # this chunk's logits, not the GEMMs queued after them
            with torch.cuda.stream(side):
                losses[s:s + C] = tk.softcap_cross_entropy_(logits, targets[s:s + C], cap)
                done = torch.cuda.Event(); done.record(side)
            if i + 1 < n:
                nxt = x[s + C:s + 2 * C] @ w.t()
                ready = torch.cuda.Event(); ready.record(main)
            if scope == "L":
                carve(0)
            main.wait_event(done)
            torch.mm(logits, w, out=grad_x[s:s + C])
            _accumulate(grad_w, logits.t(), x[s:s + C])
            if scope == "L":
                carve(carveout)
        carve(0)
        loss = losses.sum()
    caller.wait_stream(main)
    return loss, grad_x, grad_w


def t(fn, n=10):
    for _ in range(2): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n


ref = sequential()
rel = lambda p, q: ((p.float() - q.float()).norm() / q.float().norm()).item()
print(f"sequential: {t(sequential):.2f} ms per micro-batch", flush=True)
cases = [(0, "all", None), (8, "L", None), (16, "L", None), (24, "L", None), (32, "L", None), (48, "L", None),
         (8, "all", None), (16, "all", None), (24, "all", None), (16, "L", hi), (24, "L", hi), (16, "all", hi)]
for rep in range(2):
    print(f"-- rep {rep}: sequential {t(sequential):.2f} ms", flush=True)
    for c, scope, st in cases:
        out = pipelined(c, scope, st)
        err = [rel(p, q) for p, q in zip(out, ref)]
        print(f"carveout {c:2d} on {scope:3s}{' (GEMMs on a high-priority stream)' if st is not None else ''}: "
              f"{t(lambda: pipelined(c, scope, st)):.2f} ms (rel. diff loss {err[0]:.1e}, dx {err[1]:.1e}, dW {err[2]:.1e})",
              flush=True)
