"""Probe: ittybitty's training step with attention through flash-attn-4 (CuTe DSL, sm_90 kernels) as a custom op,
against SDPA (cuDNN) in the same process, alternating. q, k, v go in as (B, T, H, D), no transposes."""
import sys, time, json, os
import torch
from torch import Tensor
import torch.nn.functional as F
import tinylab.model as M
from tinylab.bench.gpu import TrainStep, time_steps
t = time.perf_counter()
from flash_attn.cute.interface import _flash_attn_fwd, _flash_attn_bwd
import_s = time.perf_counter() - t
print("fa4 import", import_s, flush=True)

@torch.library.custom_op("probe::fa4", mutates_args=())
def fa4(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    out, lse = _flash_attn_fwd(q, k, v, causal=True, return_lse=True)[:2]
    return out, lse

@fa4.register_fake
def _(q, k, v):
    B, T, H, D = q.shape
    return q.new_empty((B, T, H, v.shape[-1])), q.new_empty((B, H, T), dtype=torch.float32)

@torch.library.custom_op("probe::fa4_bwd", mutates_args=())
def fa4_bwd(q: Tensor, k: Tensor, v: Tensor, out: Tensor, dout: Tensor, lse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout.contiguous(), lse, None, True, 0.0)[:3]
    return dq, dk, dv

@fa4_bwd.register_fake
def _(q, k, v, out, dout, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

def setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)

def backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    return fa4_bwd(q, k, v, out, dout, lse)

fa4.register_autograd(backward, setup_context=setup_context)

orig = M.CausalSelfAttention.forward
def fa4_forward(self, x, cos_sin, kv_cache=None):
    B, T, _ = x.shape
    q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
    k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
    v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
    cos, sin = cos_sin
    q, k = M.rotary_norm(q, cos, sin, self.fused_rope_norm), M.rotary_norm(k, cos, sin, self.fused_rope_norm)
    y, _ = fa4(q, k, v)
    return self.c_proj(y.view(B, T, -1))

# numerics of one layer's attention, eager, against SDPA
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, do = (torch.randn(4, 2048, 8, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
t = time.perf_counter(); y, lse = fa4(q, k, v); torch.cuda.synchronize(); print("first fwd", time.perf_counter() - t, y.shape, y.stride(), lse.shape, lse.stride(), flush=True)
ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
print("out rel err vs sdpa", ((y.float() - ref.float()).norm() / ref.float().norm()).item(), flush=True)
out = sys.argv[1]
def run(name):
    torch._dynamo.reset()  # else the new model reuses the graph compiled for the other attention
    torch.manual_seed(0)
    M.CausalSelfAttention.forward = fa4_forward if name == "fa4" else orig
    t = time.perf_counter()
    step = TrainStep("ittybitty", 48)
    losses = [step().item() for _ in range(5)]
    warm = time.perf_counter() - t
    times = sorted(time_steps(step, 2, 30))
    rec = dict(case=name, warm_s=warm, step_ms=times[15] * 1e3, step_ms_min=times[0] * 1e3, tok_per_s=491520 / times[15], losses=losses, fa4_import_s=import_s)
    print(json.dumps(rec), flush=True)
    open(out, "a").write(json.dumps(rec) + "\n")
    del step; torch.cuda.empty_cache()
for name in ["sdpa", "fa4", "sdpa", "fa4"]:
    run(name)
