"""Session 8: variants of tinylab.kernels._mm_epilogue_tma_kernel at ittybitty's shapes.
PREFETCH 0: today's (aux read by TMA in the epilogue, after the K loop); 1: aux read with pointer loads issued before
the K loop (the loads fly while the MMAs run; the registers are waited for at first use); 2: aux read by TMA before
the K loop. WS: tl.range(..., warp_specialize=True). EPI 0: a plain GEMM (the lm_head's logits, 8192 x 24,576 x 512)."""
import sys
import torch, triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor
from tinylab import kernels as tk


@triton.jit
def _epi(acc, aux, EPI: tl.constexpr):
    if EPI == 0:
        return acc
    if EPI == 1:
        r = tl.maximum(acc, 0.0)
        return r * r
    return acc * 2.0 * tl.sqrt(aux.to(tl.float32))


@triton.jit
def kern(a_desc, b_desc, c_desc, aux_desc, aux_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
         GROUP_M: tl.constexpr, EPI: tl.constexpr, B_NK: tl.constexpr, NUM_SMS: tl.constexpr,
         PREFETCH: tl.constexpr, WS: tl.constexpr, FLATTEN: tl.constexpr):
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_SMS, flatten=FLATTEN, warp_specialize=WS):
        pid_m, pid_n = tk._grouped_tile(tile, num_m, num_n, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        if EPI == 2 and PREFETCH == 1:
            rows = om + tl.arange(0, BM)
            cols = on + tl.arange(0, BN // 2)
            p = aux_ptr + rows[:, None].to(tl.int64) * N + cols[None, :]
            mask = (rows[:, None] < M) & (cols[None, :] < N)
            pre0 = tl.load(p, mask=mask, other=0.0)
            pre1 = tl.load(p + BN // 2, mask=mask & (cols[None, :] + BN // 2 < N), other=0.0)
        if EPI == 2 and PREFETCH == 2:
            pre0 = aux_desc.load([om, on])
            pre1 = aux_desc.load([om, on + BN // 2])
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            if B_NK:
                acc = tl.dot(a_desc.load([om, k]), b_desc.load([on, k]).T, acc)
            else:
                acc = tl.dot(a_desc.load([om, k]), b_desc.load([k, on]), acc)
        acc0, acc1 = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
        if EPI == 2 and PREFETCH != 0:
            aux0 = pre0
        elif EPI == 2:
            aux0 = aux_desc.load([om, on])
        else:
            aux0 = acc0
        c_desc.store([om, on], _epi(acc0, aux0, EPI).to(c_desc.dtype))
        if EPI == 2 and PREFETCH != 0:
            aux1 = pre1
        elif EPI == 2:
            aux1 = aux_desc.load([om, on + BN // 2])
        else:
            aux1 = acc1
        c_desc.store([om, on + BN // 2], _epi(acc1, aux1, EPI).to(c_desc.dtype))


sms = torch.cuda.get_device_properties(0).multi_processor_count


def t(fn, n=30):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3


def launch(a, b, aux, N, epi, BM, BN, BK, w, st, pre, ws, flat, group=8, per_sm=1):
    M, Kd = a.shape
    b_nk = b.stride(0) == 1
    c = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    desc = TensorDescriptor.from_tensor
    a_d, c_d = desc(a, [BM, BK]), desc(c, [BM, BN // 2])
    b_d = desc(b.t(), [BN, BK]) if b_nk else desc(b, [BK, BN])
    aux_d = desc(aux, [BM, BN // 2]) if aux is not None else c_d
    progs = per_sm * sms
    grid = (min(progs, triton.cdiv(M, BM) * triton.cdiv(N, BN)),)
    kern[grid](a_d, b_d, c_d, aux_d, c if aux is None else aux, M, N, Kd, BM=BM, BN=BN, BK=BK, GROUP_M=group,
               EPI=epi, B_NK=b_nk, NUM_SMS=progs, PREFETCH=pre, WS=ws, FLATTEN=flat, num_warps=w, num_stages=st)
    return c


rel = lambda p, q: ((p.float() - q).norm() / q.norm()).item()
g = torch.Generator(device="cuda").manual_seed(0)
M, d, h, V, C = 98304, 512, 2048, 24576, 8192
x = torch.randn(M, d, device="cuda", generator=g).to(torch.bfloat16)
w_fc = (torch.randn(h, d, device="cuda", generator=g) * d ** -0.5).to(torch.bfloat16)
w_proj = (torch.randn(d, h, device="cuda", generator=g) * h ** -0.5).to(torch.bfloat16)
dy = torch.randn(M, d, device="cuda", generator=g).to(torch.bfloat16)
a_ref = torch.relu(x.float() @ w_fc.float().t()).square()
a16 = a_ref.to(torch.bfloat16)
dh_ref = (dy.float() @ w_proj.float()) * 2 * a16.float().sqrt()
wte = (torch.randn(V, d, device="cuda", generator=g) * d ** -0.5).to(torch.bfloat16)
xc = x[:C]
logits_ref = xc.float() @ wte.float().t()

which = sys.argv[1] if len(sys.argv) > 1 else "all"
for rep in range(2):
    print(f"-- rep {rep}: cuBLAS x·W_fcᵀ {t(lambda: x @ w_fc.t()):.0f} us, dy·W_proj {t(lambda: dy @ w_proj):.0f} us, "
          f"logits xc·Wᵀ {t(lambda: xc @ wte.t()):.0f} us; tinylab today: fwd {t(lambda: tk._mm_epilogue(x, w_fc.t(), None, 1)):.0f} us, "
          f"bwd {t(lambda: tk._mm_epilogue(dy, w_proj, a16, 2)):.0f} us", flush=True)
    cases = []
    if which in ("all", "mlp"):
        for pre, ws, flat, st in [(0, False, True, 3), (1, False, True, 3), (1, False, True, 2), (2, False, True, 2),
                                  (1, False, False, 3), (0, True, True, 3), (0, True, False, 3), (1, True, False, 3)]:
            cases.append(("bwd", (dy, w_proj, a16, h, 2), dh_ref, (128, 256, 64, 8, st, pre, ws, flat)))
        for pre, ws, flat, st in [(0, True, True, 3), (0, True, False, 3), (0, False, False, 3)]:
            cases.append(("fwd", (x, w_fc.t(), None, h, 1), a_ref, (128, 256, 64, 8, st, pre, ws, flat)))
        cases.append(("bwd", (dy, w_proj, a16, h, 2), dh_ref, (128, 128, 64, 4, 4, 1, False, True)))
        cases.append(("bwd", (dy, w_proj, a16, h, 2), dh_ref, (128, 128, 64, 8, 4, 1, False, True)))
    if which in ("all", "logits"):
        for cfg in [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
                    (128, 128, 64, 8, 4), (128, 256, 64, 8, 3, True)]:
            BM, BN, BK, w, st, *ws = cfg
            cases.append(("logits", (xc, wte.t(), None, V, 0), logits_ref, (BM, BN, BK, w, st, 0, bool(ws), True)))
    for name, args, ref, cfg in cases:
        label = f"{name} {cfg[0]}x{cfg[1]}x{cfg[2]} w{cfg[3]} s{cfg[4]} pre{cfg[5]} ws{int(cfg[6])} flat{int(cfg[7])}"
        try:
            err = rel(launch(*args[:4], args[4], *cfg), ref)
            print(f"{label}: {t(lambda: launch(*args[:4], args[4], *cfg)):.0f} us (err {err:.1e})", flush=True)
        except Exception as ex:
            print(f"{label}: fail {type(ex).__name__}: {str(ex)[:160]}", flush=True)
