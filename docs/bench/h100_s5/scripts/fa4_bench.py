"""FA4 (flash-attn-4, CuTe DSL) against torch's SDPA backends at ittybitty's attention shape, one H100.
Times: first call (JIT compile) of fwd and bwd; then fwd and fwd+bwd medians with CUDA events.
Accuracy: out and grads of each against an fp32 math reference on a small batch."""
import os, sys, time, json
t0 = time.perf_counter()
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
B, T, H, D = int(os.environ.get("B", 48)), 2048, 8, 64
dev = "cuda"
out_path = sys.argv[1] if len(sys.argv) > 1 else None
rec = {}
def ev_time(fn, n=20, warm=3):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts)//2]
g = torch.Generator(device=dev).manual_seed(0)
mk = lambda: torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16, generator=g)
q, k, v, do = mk(), mk(), mk(), mk()
q.requires_grad_(); k.requires_grad_(); v.requires_grad_()
flops_fwd = 4 * B * H * T * T * D / 2
t = time.perf_counter(); from flash_attn.cute import flash_attn_func; rec["fa4_import_s"] = time.perf_counter() - t
print("import", rec["fa4_import_s"], flush=True)
def fa4_fwd():
    with torch.no_grad(): return flash_attn_func(q, k, v, causal=True)[0]
def fa4_fb():
    o = flash_attn_func(q, k, v, causal=True)[0]; o.backward(do)
t = time.perf_counter(); fa4_fwd(); torch.cuda.synchronize(); rec["fa4_first_fwd_s"] = time.perf_counter() - t
t = time.perf_counter(); fa4_fb(); torch.cuda.synchronize(); rec["fa4_first_fwd_bwd_s"] = time.perf_counter() - t
print("first calls", rec, flush=True)
def sdpa(backend):
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    def fwd():
        with torch.no_grad(), sdpa_kernel(backend): return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    def fb():
        with sdpa_kernel(backend): o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        o.transpose(1, 2).backward(do)
    return fwd, fb
cases = {"fa4": (fa4_fwd, fa4_fb), "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION), "flash2": sdpa(SDPBackend.FLASH_ATTENTION)}
for rep in range(2):
    for name, (fwd, fb) in cases.items():
        tf = ev_time(fwd); tfb = ev_time(fb)
        r = dict(case=name, rep=rep, fwd_ms=tf, fwd_bwd_ms=tfb, bwd_ms=tfb - tf,
                 fwd_tflops=flops_fwd / tf / 1e9, fwd_bwd_tflops=3.5 * flops_fwd / tfb / 1e9)
        print(json.dumps(r), flush=True); rec.setdefault("rows", []).append(r)
# accuracy at batch 2 against fp32 math
gs = torch.Generator(device=dev).manual_seed(1)
mks = lambda: torch.randn(2, T, H, D, device=dev, dtype=torch.bfloat16, generator=gs)
qs, ks, vs, dos = mks(), mks(), mks(), mks()
def grads(fn, dtype):
    a, b_, c = (x.detach().to(dtype).requires_grad_() for x in (qs, ks, vs))
    o = fn(a, b_, c); o.backward(dos.to(dtype)); return [o.float(), a.grad.float(), b_.grad.float(), c.grad.float()]
math = lambda a, b_, c: F.scaled_dot_product_attention(a.transpose(1, 2), b_.transpose(1, 2), c.transpose(1, 2), is_causal=True).transpose(1, 2)
ref = grads(math, torch.float32)
def cud(a, b_, c):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION): return math(a, b_, c)
for name, fn in {"fa4": lambda a, b_, c: flash_attn_func(a, b_, c, causal=True)[0], "cudnn": cud}.items():
    got = grads(fn, torch.bfloat16)
    errs = {n: ((x - y).norm() / y.norm()).item() for n, x, y in zip(["out", "dq", "dk", "dv"], got, ref)}
    print(name, "rel err vs fp32", errs, flush=True); rec[f"{name}_relerr"] = errs
if out_path: json.dump(rec, open(out_path, "w"), indent=1)
