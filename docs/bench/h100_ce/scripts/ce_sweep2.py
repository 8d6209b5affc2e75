"""The loss kernel's tile (kernels.CE_TILE) on one 8192 x 24,576 bf16 chunk: gradient in place (training), FP8
gradient + transpose (--fp8-lm-head), losses only (evaluation)."""
import torch
from tinylab import kernels as K
from tinylab.loss import FP8_GRAD_SCALE

def t(fn, n=50):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3

torch.manual_seed(0)
N, V = 8192, 24576
src = (torch.randn(N, V, device="cuda") * 4).bfloat16()
tg = torch.randint(0, V, (N,), device="cuda"); tg[::7] = -1
GB = N * V * 2 / 1e9
for B, w in [(4096, 8), (8192, 16), (8192, 32), (4096, 16), (8192, 8), (16384, 32), (2048, 8)]:
    K.CE_TILE = dict(BLOCK=B, num_warps=w)
    buf = src.clone()
    g = t(lambda: K.softcap_cross_entropy_(buf, tg, 15.0))
    f8 = t(lambda: K.softcap_cross_entropy_fp8(src, tg, 15.0, FP8_GRAD_SCALE))
    ev = t(lambda: K.softcap_cross_entropy(src, tg, 15.0))
    print(f"BLOCK {B:5d} warps {w:2d}: bf16 grad {g:6.1f} us ({3 * GB / g * 1e3:.2f} TB/s as 3 passes) | "
          f"fp8 grad + transpose {f8:6.1f} us | losses only {ev:6.1f} us ({GB / ev * 1e3:.2f} TB/s)", flush=True)
