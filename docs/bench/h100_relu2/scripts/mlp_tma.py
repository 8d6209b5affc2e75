"""Persistent TMA Triton GEMM with the ReLU² epilogues, against the plain kernel in tinylab.kernels and cuBLAS."""
import os, sys, torch, triton, triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

@triton.jit
def _tile(tile, num_m, num_n, GROUP_M: tl.constexpr):
    first_m = (tile // (GROUP_M * num_n)) * GROUP_M
    rows_here = min(num_m - first_m, GROUP_M)
    return first_m + (tile % (GROUP_M * num_n)) % rows_here, (tile % (GROUP_M * num_n)) // rows_here

@triton.jit
def mm_tma_kernel(a_desc, b_desc, c_desc, aux_ptr, aux_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  GROUP_M: tl.constexpr, EPI: tl.constexpr, B_NK: tl.constexpr, NUM_SMS: tl.constexpr,
                  FLATTEN: tl.constexpr, SUBTILE: tl.constexpr, AUX: tl.constexpr):
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    k_tiles = tl.cdiv(K, BK)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_SMS, flatten=FLATTEN):
        pid_m, pid_n = _tile(tile, num_m, num_n, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        if EPI == 2 and AUX == 1:
            rm = om + tl.arange(0, BM)
            rn = on + tl.arange(0, BN)
            aux = tl.load(aux_ptr + rm[:, None].to(tl.int64) * N + rn[None, :])
        for ki in range(k_tiles):
            a = a_desc.load([om, ki * BK])
            if B_NK:
                acc = tl.dot(a, b_desc.load([on, ki * BK]).T, acc)
            else:
                acc = tl.dot(a, b_desc.load([ki * BK, on]), acc)
        if EPI == 1:
            r = tl.maximum(acc, 0.0)
            acc = r * r
        elif EPI == 2 and AUX == 1:
            acc = acc * 2.0 * tl.sqrt(aux.to(tl.float32))
        elif EPI == 2 and AUX == 2 and not SUBTILE:
            acc = acc * 2.0 * tl.sqrt(aux_desc.load([om, on]).to(tl.float32))
        elif EPI == 2 and AUX == 0:
            rm = om + tl.arange(0, BM)
            rn = on + tl.arange(0, BN)
            aux = tl.load(aux_ptr + rm[:, None].to(tl.int64) * N + rn[None, :])
            acc = acc * 2.0 * tl.sqrt(aux.to(tl.float32))
        if SUBTILE:
            acc = tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1))
            c0, c1 = tl.split(acc)
            if EPI == 2 and AUX == 2:
                c0 = c0 * 2.0 * tl.sqrt(aux_desc.load([om, on]).to(tl.float32))
                c1 = c1 * 2.0 * tl.sqrt(aux_desc.load([om, on + BN // 2]).to(tl.float32))
            c_desc.store([om, on], c0.to(tl.bfloat16))
            c_desc.store([om, on + BN // 2], c1.to(tl.bfloat16))
        else:
            c_desc.store([om, on], acc.to(tl.bfloat16))

def run(a, b, aux, epi, b_nk, BM, BN, BK, w, s, flatten, subtile, sms, auxm=0):
    M, K = a.shape
    N = b.shape[0] if b_nk else b.shape[1]
    c = torch.empty(M, N, device=a.device, dtype=torch.bfloat16)
    ad = TensorDescriptor.from_tensor(a, [BM, BK])
    bd = TensorDescriptor.from_tensor(b, [BN, BK] if b_nk else [BK, BN])
    cd = TensorDescriptor.from_tensor(c, [BM, BN // 2 if subtile else BN])
    xd = TensorDescriptor.from_tensor(aux if aux is not None else c, [BM, BN // 2 if subtile else BN])
    grid = (min(sms, triton.cdiv(M, BM) * triton.cdiv(N, BN)),)
    if os.environ.get("TRITON_INTERPRET") == "1":
        M, N, K = tl.constexpr(M), tl.constexpr(N), tl.constexpr(K)
    mm_tma_kernel[grid](ad, bd, cd, c if aux is None else aux, xd, M, N, K, BM=BM, BN=BN, BK=BK, GROUP_M=8, EPI=epi,
                        B_NK=b_nk, NUM_SMS=sms, FLATTEN=flatten, SUBTILE=subtile, AUX=auxm, num_warps=w, num_stages=s)
    return c

if __name__ == "__main__":
    small = os.environ.get("TRITON_INTERPRET") == "1"
    dev = "cpu" if small else "cuda"
    M, d, h = (256, 64, 128) if small else (98304, 512, 2048)
    sms = 4 if small else torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(M, d, device=dev, generator=g).to(torch.bfloat16)
    w_fc = (torch.randn(h, d, device=dev, generator=g) * d ** -0.5).to(torch.bfloat16)
    w_proj = (torch.randn(d, h, device=dev, generator=g) * h ** -0.5).to(torch.bfloat16)
    dy = torch.randn(M, d, device=dev, generator=g).to(torch.bfloat16)
    a_ref = torch.relu(x.float() @ w_fc.float().t()).square()
    a16 = a_ref.to(torch.bfloat16)
    dh_ref = (dy.float() @ w_proj.float()) * 2 * a16.float().sqrt()
    rel = lambda p, q: ((p.float() - q).norm() / q.norm()).item()
    def t(fn, n=20):
        for _ in range(3): fn()
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record()
        for _ in range(n): fn()
        e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3
    configs = [(64, 64, 32, 4, 2, True, False)] if small else [
        (128, 256, 64, 8, 3, True, True), (128, 256, 64, 8, 3, False, True), (128, 256, 64, 8, 4, True, True),
        (128, 256, 64, 8, 3, True, False), (128, 128, 64, 8, 4, True, False), (128, 128, 64, 4, 4, True, False),
        (256, 128, 64, 8, 3, True, True), (128, 256, 64, 4, 3, True, True), (128, 128, 64, 8, 5, True, True)]
    if not small:
        from tinylab import kernels as K
        print(f"plain (tinylab.kernels): fwd {t(lambda: K._mm_epilogue(x, w_fc.t(), None, 1)):.0f} us, "
              f"bwd {t(lambda: K._mm_epilogue(dy, w_proj, a16, 2)):.0f} us; cuBLAS x·W_fcᵀ {t(lambda: x @ w_fc.t()):.0f} us")
    configs = [(128, 256, 64, 8, 3, True, True, 0), (128, 256, 64, 8, 3, True, True, 2), (128, 256, 64, 8, 2, True, True, 2),
               (128, 128, 64, 8, 4, True, False, 1), (128, 128, 64, 8, 4, True, False, 2), (128, 128, 64, 8, 4, True, True, 2),
               (128, 128, 64, 4, 4, True, False, 1), (128, 128, 64, 8, 3, True, False, 1), (256, 128, 64, 8, 3, True, True, 2),
               (128, 128, 64, 8, 4, False, False, 1)]
    print(f"fwd 128x256x64 s3 subtile {t(lambda: run(x, w_fc, None, 1, True, 128, 256, 64, 8, 3, True, True, sms)):.0f} us")
    for BM, BN, BK, w, s, flat, sub, auxm in configs:
        try:
            b = lambda: run(dy, w_proj, a16, 2, False, BM, BN, BK, w, s, flat, sub, sms, auxm)
            eb = rel(b(), dh_ref)
            print(f"bwd {BM}x{BN}x{BK} w{w} s{s} flatten={flat} subtile={sub} aux={auxm}: {t(b):.0f} us (err {eb:.1e})", flush=True)
        except Exception as ex:
            print(f"bwd {BM}x{BN}x{BK} w{w} s{s} flatten={flat} subtile={sub} aux={auxm}: fail {type(ex).__name__}: {str(ex)[:120]}", flush=True)
