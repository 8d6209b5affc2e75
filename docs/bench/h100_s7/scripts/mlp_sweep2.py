"""Session 7 (second sweep, around the first one's best backward): tinylab.kernels._mm_epilogue_tma_kernel (the MLP GEMMs with ReLU² epilogues) at ittybitty's shapes, with
tile shapes and programs per SM swept: can two programs on an SM hide each other's epilogue? cuBLAS for reference."""
import torch, triton
from triton.tools.tensor_descriptor import TensorDescriptor
from tinylab import kernels as K

M, d, h = 98304, 512, 2048
sms = torch.cuda.get_device_properties(0).multi_processor_count
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(M, d, device="cuda", generator=g).to(torch.bfloat16)
w_fc = (torch.randn(h, d, device="cuda", generator=g) * d ** -0.5).to(torch.bfloat16)
w_proj = (torch.randn(d, h, device="cuda", generator=g) * h ** -0.5).to(torch.bfloat16)
dy = torch.randn(M, d, device="cuda", generator=g).to(torch.bfloat16)
a_ref = torch.relu(x.float() @ w_fc.float().t()).square()
a16 = a_ref.to(torch.bfloat16)
dh_ref = (dy.float() @ w_proj.float()) * 2 * a16.float().sqrt()
rel = lambda p, q: ((p.float() - q).norm() / q.norm()).item()

def t(fn, n=30):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n * 1e3

def run(epi, BM, BN, BK, w, st, per_sm, group=8):
    a, b, aux = (x, w_fc.t(), None) if epi == 1 else (dy, w_proj, a16)
    b_nk = b.stride(0) == 1
    c = torch.empty(M, h, device="cuda", dtype=torch.bfloat16)
    desc = TensorDescriptor.from_tensor
    a_d, c_d = desc(a, [BM, BK]), desc(c, [BM, BN // 2])
    b_d = desc(b.t(), [BN, BK]) if b_nk else desc(b, [BK, BN])
    aux_d = desc(aux, [BM, BN // 2]) if aux is not None else c_d
    progs = per_sm * sms
    grid = (min(progs, triton.cdiv(M, BM) * triton.cdiv(h, BN)),)
    K._mm_epilogue_tma_kernel[grid](a_d, b_d, c_d, aux_d, M, h, d, BM=BM, BN=BN, BK=BK, GROUP_M=group, EPI=epi,
                                    B_NK=b_nk, NUM_SMS=progs, num_warps=w, num_stages=st)
    return c

print(f"cuBLAS x·W_fcᵀ {t(lambda: x @ w_fc.t()):.0f} us, dy·W_proj {t(lambda: dy @ w_proj):.0f} us; "
      f"tinylab today: fwd {t(lambda: K._mm_epilogue(x, w_fc.t(), None, 1)):.0f} us, "
      f"bwd {t(lambda: K._mm_epilogue(dy, w_proj, a16, 2)):.0f} us", flush=True)
configs = [(128, 256, 64, 8, 3, 1, 8), (128, 128, 32, 4, 4, 2, 8), (128, 128, 32, 4, 4, 2, 4), (128, 128, 32, 4, 4, 2, 16),
           (128, 128, 32, 4, 5, 2, 8), (128, 128, 32, 4, 3, 2, 8), (128, 128, 32, 4, 4, 3, 8), (128, 128, 32, 4, 6, 2, 8),
           (128, 256, 64, 8, 3, 1, 4), (128, 256, 64, 8, 3, 1, 16), (128, 128, 64, 4, 2, 2, 8), (128, 256, 32, 8, 4, 1, 16)]
ref = {1: a_ref, 2: dh_ref}
for rep in range(2):
    for epi in (2, 1):
        for BM, BN, BK, w, st, per_sm, group in configs:
            name = f"{'fwd' if epi == 1 else 'bwd'} {BM}x{BN}x{BK} w{w} s{st} x{per_sm}/SM G{group}"
            try:
                err = rel(run(epi, BM, BN, BK, w, st, per_sm, group), ref[epi])
                print(f"{name}: {t(lambda: run(epi, BM, BN, BK, w, st, per_sm, group)):.0f} us (err {err:.1e})", flush=True)
            except Exception as ex:
                print(f"{name}: fail {type(ex).__name__}: {str(ex)[:100]}", flush=True)
