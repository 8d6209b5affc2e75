"""Session 8: does the loss kernel run alongside a GEMM at all? One chunk's CE kernel (side stream) launched right
after one GEMM (main stream): cuBLAS with an SM carveout, or tinylab's persistent TMA GEMM on 132 - c SMs."""
import torch, triton
from triton.tools.tensor_descriptor import TensorDescriptor
from tinylab import kernels as tk

torch.manual_seed(0)
d, V, C, cap = 512, 24576, 8192, 15.0
x = torch.randn(C, d, device="cuda").bfloat16()
w = (torch.randn(V, d, device="cuda") * d ** -0.5).bfloat16()
g = torch.randn(C, V, device="cuda").bfloat16()
targets = torch.randint(0, V, (C,), device="cuda")
buf = torch.randn(C, V, device="cuda").bfloat16()
side = torch.cuda.Stream()
sms = torch.cuda.get_device_properties(0).multi_processor_count


def tma_gemm(a, b_nk, progs):  # a (M, K) · b_nkᵀ, b_nk (N, K) contiguous, plain epilogue? use EPI=1 (ReLU²) cost ~ same
    M, K = a.shape; N = b_nk.shape[0]
    c = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    bm, bn, bk = 128, 256, 64
    desc = TensorDescriptor.from_tensor
    a_d, c_d, b_d = desc(a, [bm, bk]), desc(c, [bm, bn // 2]), desc(b_nk, [bn, bk])
    tk._mm_epilogue_tma_kernel[(progs,)](a_d, b_d, c_d, c_d, M, N, K, BM=bm, BN=bn, BK=bk, GROUP_M=8, EPI=1, B_NK=True,
                                          NUM_SMS=progs, num_warps=8, num_stages=3)
    return c


def ce():
    with torch.cuda.stream(side):
        tk.softcap_cross_entropy_(buf, targets, cap)


def t(fn, n=20):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    side.synchronize()  # wait for the side stream's work too
    e.record(); torch.cuda.synchronize()
    torch.cuda.current_stream().wait_stream(side)
    return s.elapsed_time(e) / n * 1e3


def both(gemm, ce_first=False):
    def f():
        side.wait_stream(torch.cuda.current_stream())
        if ce_first:
            ce(); gemm()
        else:
            gemm(); ce()
        torch.cuda.current_stream().wait_stream(side)
    return f


ce_alone = t(lambda: (ce(), torch.cuda.current_stream().wait_stream(side)))
print(f"CE kernel alone (side stream): {ce_alone:.0f} us", flush=True)
for rep in range(2):
    print(f"-- rep {rep}", flush=True)
    for c in (0, 16, 32, 48, 66):
        torch._C._set_sm_carveout_experimental(c or None)
        for name, gemm in [("logits xc·Wᵀ", lambda: x @ w.t()), ("dx g·W", lambda: g @ w), ("dW gᵀ·x", lambda: g.t() @ x)]:
            alone = t(gemm)
            print(f"cuBLAS {name:12s} carveout {c:2d}: alone {alone:.0f} us, with CE after {t(both(gemm)):.0f} us, "
                  f"CE first {t(both(gemm, True)):.0f} us (sum {alone + ce_alone:.0f})", flush=True)
        torch._C._set_sm_carveout_experimental(None)
        gemm = lambda: tma_gemm(x, w, sms - c)
        alone = t(gemm)
        print(f"TMA GEMM on {sms - c} SMs: alone {alone:.0f} us, with CE after {t(both(gemm)):.0f} us, "
              f"CE first {t(both(gemm, True)):.0f} us (sum {alone + ce_alone:.0f})", flush=True)
