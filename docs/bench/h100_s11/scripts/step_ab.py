"""Session 11: the step with today's loss kernel (first row first, no eviction hints; HEAD's _softcap_ce_kernel,
copied here) against the working tree's (last row first, evict_last / evict_first), alternating in one process.
Prediction: -25 to -40 us a chunk, -1.5 to -2.4 ms a step."""
import json
import sys

import triton
import triton.language as tl

from tinylab import kernels as K
from tinylab.bench.gpu import bench_train, matmul_tflops


@K._jit_any_alignment("targets_ptr")
def _old_kernel(logits_ptr, stride, targets_ptr, loss_ptr, grad_ptr, grad_stride, n_cols, softcap,
                grad_scale, BLOCK: tl.constexpr, GRAD: tl.constexpr, E5M2: tl.constexpr, APPROX: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    out = grad_ptr + row * grad_stride
    target = tl.load(targets_ptr + row)
    valid = target >= 0
    inv_c = 1.0 / softcap
    k = softcap * 1.4426950408889634
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n_cols
        acc += K._exp_z(tl.load(base + cols, mask=mask, other=0.0), mask, inv_c, k, APPROX)
    lse2 = k + tl.log2(tl.sum(acc, axis=0))
    safe = tl.where(valid, target, 0)
    z_target = softcap * K._tanh(tl.load(base + safe).to(tl.float32) * inv_c, APPROX)
    tl.store(loss_ptr + row, tl.where(valid, lse2 * 0.6931471805599453 - z_target, 0.0))
    if GRAD:
        keep = tl.where(valid, grad_scale, 0.0)
        for off in range(0, n_cols, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            mask = cols < n_cols
            grad = K._grad(tl.load(base + cols, mask=mask, other=0.0), lse2, cols == target, keep, inv_c, k, APPROX)
            if E5M2:
                grad = K._round_e5m2(grad)
            tl.store(out + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)


new_kernel = K._softcap_ce_kernel
out = sys.argv[1]
peak = matmul_tflops()
print(f'bf16 matmul rate {peak:.0f} TFLOP/s', flush=True)
for rep in range(3):
    for name, kern in (("before", _old_kernel), ("after", new_kernel)):
        K._softcap_ce_kernel = kern
        r = bench_train("ittybitty", 48, compile=True, loss="chunked", residual="bf16", warmup=5, steps=20,
                        peak_tflops=peak)
        r["ce_kernel"], r["rep"] = name, rep
        print(f"{name} rep={rep}: {r['step_ms']:.2f} ms (spread {r['step_ms_spread']:.2f}), {r['tok_per_s']:,.0f} tok/s, "
              f"MFU {r['mfu']:.3f}, loss {r['final_loss']:.4f}", flush=True)
        with open(f"{out}/ce_step_ab.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
