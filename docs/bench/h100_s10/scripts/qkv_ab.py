"""Session 10, call 1: q, k, v in one GEMM (kernels.qkv_rope_norm) against today's three GEMMs + rope_rms_norm,
ittybitty at batch 48, compiled by region, alternating in one process; then one profiled step of each."""
import contextlib
import json
import sys

import torch

from tinylab import model as M
from tinylab.bench.gpu import bench_train, profile_step
out = sys.argv[1]
rows = []
for rep in range(3):
    for fused in (False, True):
        M.FUSED_QKV = fused
        r = bench_train("ittybitty", 48, compile=True, loss="chunked", residual="bf16", warmup=5, steps=20,
                        peak_tflops=989.0)
        r["fused_qkv"], r["rep"] = fused, rep
        rows.append(r)
        print(f"fused_qkv={fused} rep={rep}: {r['step_ms']:.2f} ms (spread {r['step_ms_spread']:.2f}), "
              f"{r['tok_per_s']:,.0f} tok/s, peak reserved {r['peak_reserved_mib']:.0f} MiB, loss {r['final_loss']:.4f}",
              flush=True)
        with open(f"{out}/qkv_ab.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
for fused in (False, True):
    M.FUSED_QKV = fused
    with open(f"{out}/profile_{'fused' if fused else 'separate'}.txt", "w") as f, contextlib.redirect_stdout(f):
        profile_step("ittybitty", 48, None)
    torch._dynamo.reset()
