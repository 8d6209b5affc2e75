"""Session 12 probe helpers: the MLP's ReLU² GEMMs through quack's CuTe DSL epilogues (sm_90 ping-pong /
cooperative kernels), FlashAttention-4 as a custom op. Module-level so quack's kernel cache can anchor the mods."""
import torch
from torch import Tensor
import cutlass.cute as cute
from quack.epilogue.frontend import gemm_epilogue
from quack.activation import relu_sq


@gemm_epilogue()
def relu2_fwd(acc):
    """a = relu(acc)²; the pre-activation is not stored."""
    return {"D": relu_sq(acc)}


@gemm_epilogue()
def relu2_bwd(acc, c):
    """dh = acc·2·√c, c = a = relu(h)² (so √c = relu(h))."""
    return {"D": acc * (2.0 * cute.math.sqrt(c, fastmath=True))}


CONFIG = {1: None, 2: None}  # pinned GemmConfig per epilogue, or None to autotune


def mm_epilogue_quack(a: Tensor, b: Tensor, aux, epi: int, tma=None) -> Tensor:
    """tinylab.kernels._mm_epilogue's contract: epilogue(a (M, K) · b (K, N)) as a new (M, N) tensor."""
    cfg = CONFIG[epi]
    kw = dict(config=cfg, tuned=cfg is None)
    if epi == 1:
        return relu2_fwd(a, b, **kw)["D"]
    return relu2_bwd(a, b, aux, **kw)["D"]


def install_quack_mlp():
    import tinylab.kernels as K
    K._mm_epilogue_orig = getattr(K, "_mm_epilogue_orig", K._mm_epilogue)
    K._mm_epilogue = mm_epilogue_quack


def uninstall_quack_mlp():
    import tinylab.kernels as K
    if hasattr(K, "_mm_epilogue_orig"):
        K._mm_epilogue = K._mm_epilogue_orig


# ---- FlashAttention-4 (as in session 5's fa4_step.py)
from flash_attn.cute.interface import _flash_attn_fwd, _flash_attn_bwd  # noqa: E402


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


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    return fa4_bwd(q, k, v, out, dout, lse)


fa4.register_autograd(_backward, setup_context=_setup)


def _fa4_forward(self, x, cos_sin, kv_cache=None):
    import tinylab.model as M
    B, T, _ = x.shape
    q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
    k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
    v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
    cos, sin = cos_sin
    q, k = M.rotary_norm(q, cos, sin, self.fused_rope_norm), M.rotary_norm(k, cos, sin, self.fused_rope_norm)
    y, _ = fa4(q, k, v)
    return self.c_proj(y.view(B, T, -1))


def set_attention(name: str):
    import tinylab.model as M
    if not hasattr(M.CausalSelfAttention, "_forward_orig"):
        M.CausalSelfAttention._forward_orig = M.CausalSelfAttention.forward
    M.CausalSelfAttention.forward = _fa4_forward if name == "fa4" else M.CausalSelfAttention._forward_orig
