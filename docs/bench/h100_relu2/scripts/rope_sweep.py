"""Rope+QK-norm kernels at ittybitty's q shape: BLOCK_R x num_warps sweep, with bandwidth."""
import itertools, torch, triton
from tinylab import kernels as K
B, T, H, D = 48, 2048, 8, 64
x = torch.randn(B, T, H * D, device="cuda", dtype=torch.bfloat16).view(B, T, H, D)
dy = torch.randn_like(x)
cos = torch.randn(T, D // 2, device="cuda", dtype=torch.bfloat16); sin = torch.randn_like(cos)
y = torch.empty_like(x); dx = torch.empty_like(x)
def t(fn, n=30):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n
n_rows = B * T * H; nb = x.numel() * 2
for br, w in itertools.product([16, 32, 64, 128, 256], [1, 2, 4, 8]):
    g = (triton.cdiv(n_rows, br),)
    f = lambda: K._rope_rmsnorm_fwd_kernel[g](x, cos, sin, y, n_rows, T, H, x.stride(0), x.stride(1), x.stride(2), K.RMS_EPS, HALF=D // 2, BLOCK_R=br, num_warps=w)
    b = lambda: K._rope_rmsnorm_bwd_kernel[g](x, dy, cos, sin, dx, n_rows, T, H, x.stride(0), x.stride(1), x.stride(2), dy.stride(0), dy.stride(1), dy.stride(2), K.RMS_EPS, HALF=D // 2, BLOCK_R=br, num_warps=w)
    try:
        tf, tb = t(f), t(b)
    except Exception as ex:
        print(br, w, "fail", type(ex).__name__); continue
    print(f"BLOCK_R {br:4d} warps {w}: fwd {tf*1e3:6.1f} us ({2*nb/tf/1e9:.2f} TB/s)  bwd {tb*1e3:6.1f} us ({3*nb/tb/1e9:.2f} TB/s)", flush=True)
c = torch.empty_like(x)
tc = t(lambda: c.copy_(x))
print(f"copy of one q: {tc*1e3:.1f} us ({2*nb/tc/1e9:.2f} TB/s)")
