"""Architecture calculators: exact parameter counts and FLOPs, with no torch needed.

(Extended by the VRAM estimator and the `python -m tinylab.calc` CLI.)
"""
from __future__ import annotations

from .config import GPTConfig


def param_counts(c: GPTConfig) -> dict[str, int]:
    """Exact parameter count by component; equals sum(p.numel()) of the built model."""
    d, hd = c.model_dim, c.head_dim
    attn = d * c.n_head * hd + 2 * d * c.n_kv_head * hd + d * d  # c_q, c_k, c_v, c_proj
    mlp = 2 * d * c.mlp_dim                                     # c_fc, c_proj
    wte = c.vocab_size * d
    lm_head = 0 if c.tie_embeddings else c.vocab_size * d
    blocks = c.depth * (attn + mlp)
    return dict(wte=wte, attn_per_block=attn, mlp_per_block=mlp, blocks=blocks, lm_head=lm_head,
                total=wte + blocks + lm_head)


def flops_per_token(c: GPTConfig) -> int:
    """Training FLOPs per token: 6 × matmul params (blocks + lm_head) + causal attention scores.

    The attention term 12·n_head·head_dim·seq_len per layer counts QKᵀ and AV forward and
    backward over the full sequence, as nanochat and the PaLM paper do.
    """
    p = param_counts(c)
    matmul = p["blocks"] + c.vocab_size * c.model_dim  # a tied lm_head still does its matmul
    return 6 * matmul + 12 * c.depth * c.n_head * c.head_dim * c.sequence_len
