"""Exact parameter counts, FLOPs per token, token budgets and training time of a GPTConfig.

Pure arithmetic, no torch needed, so the architecture notebook and the CLI answer "how big,
how slow" on any machine; a test checks the counts against the built model's numel.
"""
from __future__ import annotations

from ..config import ConfigError, GPTConfig

CHINCHILLA_RATIO = 20  # training tokens per parameter at the compute-optimal point (Hoffmann et al. 2022)

# Dense bf16 tensor-core peak (FLOP/s, fp32 accumulate) from the vendors' datasheets; MFU is
# measured against these. 'H100 (measured)' is what a large bf16 matmul actually reaches on
# an H100 SXM: the honest ceiling for a tiny model that can never beat cuBLAS.
GPU_PEAK_FLOPS: dict[str, float] = {
    "H100": 989e12,             # H100 SXM5
    "H100 (measured)": 798e12,  # 8192² bf16 matmul on an H100 SXM5
    "H100 PCIe": 756e12,
    "H200": 989e12,
    "A100": 312e12,
    "RTX 4090": 165.2e12,
    "RTX 3090": 71e12,
}
# Their CUDA compute capability, which says what their tensor cores can do.
GPU_CAPABILITY: dict[str, tuple[int, int]] = {
    "H100": (9, 0), "H100 PCIe": (9, 0), "H200": (9, 0), "A100": (8, 0), "RTX 4090": (8, 9), "RTX 3090": (8, 6),
}
FP8_CAPABILITY = (8, 9)  # FP8 tensor cores (Ada, Hopper and later), where --fp8-lm-head runs; elsewhere it is bf16


def fp8_capable(capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability has FP8 tensor cores: the one FP8 rule, for a named GPU
    (gpu_has_fp8) and for a real device (tinylab.loss.fp8_supported)."""
    return tuple(capability) >= FP8_CAPABILITY


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


def tokens_for_ratio(c: GPTConfig, ratio: float = CHINCHILLA_RATIO) -> int:
    """Training tokens for `ratio` tokens per parameter (all parameters, embeddings included, as nanochat)."""
    if ratio <= 0:
        raise ConfigError(f"ratio must be > 0 tokens per parameter, got {ratio}")
    return int(round(ratio * param_counts(c)["total"]))


def training_time_s(c: GPTConfig, tokens: int, peak_flops: float, mfu: float) -> float:
    """Seconds to train on `tokens` on a GPU of `peak_flops` running at model-FLOPs utilisation `mfu`."""
    if peak_flops <= 0:
        raise ConfigError(f"peak_flops must be > 0, got {peak_flops}: see calc.GPU_PEAK_FLOPS")
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}: tiny models on one GPU reach about 0.2-0.5")
    return tokens * flops_per_token(c) / (peak_flops * mfu)


def _gpu_key(device_name: str) -> str | None:
    """The GPU_PEAK_FLOPS entry a device name means: the longest one it contains ('H100 PCIe' before 'H100')."""
    name = device_name.upper()
    keys = sorted((k for k in GPU_PEAK_FLOPS if "(" not in k and k.upper() in name), key=len, reverse=True)
    return keys[0] if keys else None


def gpu_peak_flops(device_name: str, measured: bool = False) -> float | None:
    """Peak bf16 FLOP/s for a torch device name ('NVIDIA H100 80GB HBM3', 'NVIDIA GeForce RTX 3090').

    measured=True prefers a measured entry where there is one. None for an unknown device (e.g. 'cpu'):
    report no MFU rather than a wrong one.
    """
    key = _gpu_key(device_name)
    if key is None:
        return None
    if measured and f"{key} (measured)" in GPU_PEAK_FLOPS:
        return GPU_PEAK_FLOPS[f"{key} (measured)"]
    return GPU_PEAK_FLOPS[key]


def gpu_has_fp8(device_name: str) -> bool:
    """Whether a named GPU (a GPU_PEAK_FLOPS entry, or a device name containing one) runs --fp8-lm-head."""
    key = _gpu_key(device_name)
    return key is not None and fp8_capable(GPU_CAPABILITY[key])
