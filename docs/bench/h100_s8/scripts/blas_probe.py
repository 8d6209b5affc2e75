"""Session 8: the step's cuBLAS GEMMs at ittybitty's shapes under torch's default BLAS path and under cuBLASLt
(torch.backends.cuda.preferred_blas_library), alternating, twice."""
import torch

torch.manual_seed(0)
bf = dict(device="cuda", dtype=torch.bfloat16)
N, C, d, h, V = 98304, 8192, 512, 2048, 24576
x, xc = torch.randn(N, d, **bf), torch.randn(C, d, **bf)
w, g = torch.randn(V, d, **bf) * 0.04, torch.randn(C, V, **bf)
wq, wfc, wp = torch.randn(d, d, **bf) * 0.04, torch.randn(h, d, **bf) * 0.04, torch.randn(d, h, **bf) * 0.02
a, dh, dy = torch.randn(N, h, **bf), torch.randn(N, h, **bf), torch.randn(N, d, **bf)
acc = torch.zeros(V, d, device="cuda", dtype=torch.float32)
cases = {
    "lm_head logits xc·Wᵀ": lambda: xc @ w.t(),
    "lm_head dx g·W": lambda: g @ w,
    "lm_head dW += gᵀ·xc (fp32 out)": lambda: torch.addmm(acc, g.t(), xc, out_dtype=torch.float32, out=acc),
    "q/k/v/o x·Wᵀ": lambda: x @ wq.t(),
    "q/k/v/o dW dyᵀ·x": lambda: dy.t() @ x,
    "c_proj a·Wpᵀ": lambda: a @ wp.t(),
    "c_proj dW dyᵀ·a": lambda: dy.t() @ a,
    "c_fc dx dh·Wfc": lambda: dh @ wfc,
    "c_fc dW dhᵀ·x": lambda: dh.t() @ x,
}


def t(fn, n=30):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3


for rep in range(2):
    for lib in ("default", "cublaslt", "cublas"):
        torch.backends.cuda.preferred_blas_library(lib)
        print(f"rep {rep} {lib:9s} " + "  ".join(f"{k}: {t(f):.0f}" for k, f in cases.items()), flush=True)
