"""MLP GEMMs of ittybitty (M = 98,304 tokens, d = 512, 4d = 2048) with ReLU² in a Triton GEMM's epilogue, against
cuBLAS + a separate pointwise kernel (as Inductor does today)."""
import itertools, torch, triton, triton.language as tl

@triton.jit
def mm_kernel(a_ptr, b_ptr, c_ptr, aux_ptr, M, N, K, sam, sak, sbk, sbn,
              BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr, EPI: tl.constexpr):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM); num_n = tl.cdiv(N, BN)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    gsize = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % gsize
    pid_n = (pid % group) // gsize
    rm = pid_m * BM + tl.arange(0, BM); rn = pid_n * BN + tl.arange(0, BN); rk = tl.arange(0, BK)
    a = a_ptr + rm[:, None].to(tl.int64) * sam + rk[None, :] * sak
    b = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        acc += tl.dot(tl.load(a), tl.load(b))
        a += BK * sak; b += BK * sbk
    off = rm[:, None].to(tl.int64) * N + rn[None, :]
    if EPI == 1:
        r = tl.maximum(acc, 0.0); out = r * r
    elif EPI == 2:
        out = acc * 2.0 * tl.sqrt(tl.load(aux_ptr + off).to(tl.float32))
    else:
        out = acc
    tl.store(c_ptr + off, out.to(tl.bfloat16))

def t(fn, n=20):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n

M, d, h = 98304, 512, 2048
x = torch.randn(M, d, device="cuda", dtype=torch.bfloat16)
w_fc = (torch.randn(h, d, device="cuda") * d ** -0.5).to(torch.bfloat16)
w_proj = (torch.randn(d, h, device="cuda") * h ** -0.5).to(torch.bfloat16)
dy = torch.randn(M, d, device="cuda", dtype=torch.bfloat16)
flops = 2 * M * d * h
relu2 = torch.compile(lambda hh: torch.relu(hh).square())
bwd_pw = torch.compile(lambda da, hh: da * 2 * torch.relu(hh))
hh = x @ w_fc.t(); a_ref = relu2(hh)
tf = t(lambda: x @ w_fc.t()); tp = t(lambda: relu2(hh))
print(f"cuBLAS x·W_fcᵀ {tf*1e3:.0f} us ({flops/tf/1e9:.0f} TFLOP/s) + relu² {tp*1e3:.0f} us = {(tf+tp)*1e3:.0f} us")
da = dy @ w_proj
tb = t(lambda: dy @ w_proj); tq = t(lambda: bwd_pw(da, hh))
print(f"cuBLAS dy·W_proj {tb*1e3:.0f} us ({flops/tb/1e9:.0f} TFLOP/s) + ·2relu(h) {tq*1e3:.0f} us = {(tb+tq)*1e3:.0f} us")
dh_ref = bwd_pw(da, hh)
out = torch.empty(M, h, device="cuda", dtype=torch.bfloat16)
for BM, BN, BK, w, s, g in [(128, 256, 64, 8, 3, 8), (128, 256, 64, 8, 4, 8), (256, 128, 64, 8, 3, 8), (256, 128, 64, 8, 4, 8),
                            (128, 128, 64, 4, 4, 8), (128, 128, 64, 8, 4, 8), (128, 128, 128, 8, 3, 8), (64, 256, 64, 4, 4, 8),
                            (128, 256, 64, 8, 3, 16), (256, 256, 64, 8, 3, 8)]:
    grid = (triton.cdiv(M, BM) * triton.cdiv(h, BN),)
    try:
        f = lambda: mm_kernel[grid](x, w_fc, out, out, M, h, d, d, 1, 1, d, BM=BM, BN=BN, BK=BK, GROUP_M=g, EPI=1, num_warps=w, num_stages=s)
        f(); err = ((out.float() - a_ref.float()).norm() / a_ref.float().norm()).item(); tff = t(f)
        b = lambda: mm_kernel[grid](dy, w_proj, out, a_ref, M, h, d, d, 1, h, 1, BM=BM, BN=BN, BK=BK, GROUP_M=g, EPI=2, num_warps=w, num_stages=s)
        b(); errb = ((out.float() - dh_ref.float()).norm() / dh_ref.float().norm()).item(); tbb = t(b)
        p = lambda: mm_kernel[grid](x, w_fc, out, out, M, h, d, d, 1, 1, d, BM=BM, BN=BN, BK=BK, GROUP_M=g, EPI=0, num_warps=w, num_stages=s)
        tpl = t(p)
    except Exception as ex:
        print(BM, BN, BK, w, s, "fail", type(ex).__name__, str(ex)[:100]); continue
    print(f"{BM}x{BN}x{BK} w{w} s{s} g{g}: plain {tpl*1e3:.0f} us ({flops/tpl/1e9:.0f} TFLOP/s); fwd+relu² {tff*1e3:.0f} us (err {err:.1e}); "
          f"bwd·2√a {tbb*1e3:.0f} us (err {errb:.1e})", flush=True)
