"""Architecture calculators: exact parameter counts, FLOPs, token budgets and training time.

Pure arithmetic on a GPTConfig, no torch needed, so the architecture notebook and the CLI
answer "how big, how slow, does it fit" on any machine. The training-memory estimator lives
in tinylab.vram and is re-exported here (vram_estimate, max_device_batch).

    python -m tinylab.calc --preset ittybitty --gpu-mem-gb 24 --batch-sizes 8,16,32,48,64
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, GPTConfig

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
        raise ValueError(f"ratio must be > 0 tokens per parameter, got {ratio}")
    return int(round(ratio * param_counts(c)["total"]))


def training_time_s(c: GPTConfig, tokens: int, peak_flops: float, mfu: float) -> float:
    """Seconds to train on `tokens` on a GPU of `peak_flops` running at model-FLOPs utilisation `mfu`."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}: see calc.GPU_PEAK_FLOPS")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}: tiny models on one GPU reach about 0.2-0.5")
    return tokens * flops_per_token(c) / (peak_flops * mfu)


def gpu_peak_flops(device_name: str, measured: bool = False) -> float | None:
    """Peak bf16 FLOP/s for a torch device name ('NVIDIA H100 80GB HBM3', 'NVIDIA GeForce RTX 3090').

    The longest matching key of GPU_PEAK_FLOPS wins ('H100 PCIe' before 'H100'); measured=True
    prefers a measured entry where there is one. None for an unknown device (e.g. 'cpu'):
    report no MFU rather than a wrong one.
    """
    name = device_name.upper()
    keys = sorted((k for k in GPU_PEAK_FLOPS if "(" not in k and k.upper() in name), key=len, reverse=True)
    if not keys:
        return None
    if measured and f"{keys[0]} (measured)" in GPU_PEAK_FLOPS:
        return GPU_PEAK_FLOPS[f"{keys[0]} (measured)"]
    return GPU_PEAK_FLOPS[keys[0]]


# ---------------------------------------------------------------------------------------- CLI

GiB = 2 ** 30  # GPU memory as sold: an RTX 3090's "24 GB" is 24 GiB


def fmt_count(n: int) -> str:
    return f"{n:,} ({n / 1e6:.2f}M)"


def format_breakdown(c: GPTConfig) -> str:
    p = param_counts(c)
    rows = [("wte", p["wte"]),
            (f"attention ({c.depth} × {p['attn_per_block']:,})", c.depth * p["attn_per_block"]),
            (f"mlp ({c.depth} × {p['mlp_per_block']:,})", c.depth * p["mlp_per_block"]),
            ("blocks", p["blocks"]),
            ("lm_head" + (" (tied to wte)" if c.tie_embeddings else ""), p["lm_head"]),
            ("total", p["total"])]
    w = max(len(r[0]) for r in rows)
    lines = [f"{name:<{w}}  {n:>13,}  {100 * n / p['total']:6.2f}%" for name, n in rows]
    return "\n".join(lines)


def format_vram_table(c: GPTConfig, batch_sizes, gpu_mem_bytes: float, **kw) -> str:
    """Estimated training VRAM per device batch size, by group, and the largest batch that fits."""
    from .vram import group_vram, max_device_batch, vram_estimate
    mem = f"{gpu_mem_bytes / GiB:g} GiB"
    lines = [f"{'batch':>5}  {'weights+opt':>11}  {'activations':>11}  {'logits':>7}  {'overhead':>8}  {'total':>7}  fits {mem}?"]
    for b in batch_sizes:
        v = vram_estimate(c, b, **kw)
        g = [x / GiB for x in group_vram(v).values()]
        lines.append(f"{b:>5}  {g[0]:10.2f}G  {g[1]:10.2f}G  {g[2]:6.2f}G  {g[3]:7.2f}G  {v['total'] / GiB:6.2f}G"
                     f"  {'yes' if v['total'] <= gpu_mem_bytes else 'no'}")
    lines.append(f"largest device batch that fits {mem}: {max_device_batch(c, gpu_mem_bytes, **kw)}")
    return "\n".join(lines)


def report(c: GPTConfig, *, gpu: str = "RTX 3090", mfu: float = 0.4, ratio: float = CHINCHILLA_RATIO,
           gpu_mem_gb: float = 24, batch_sizes=(8, 16, 32, 48, 64), compile: bool = True) -> str:
    """The CLI's text: parameter breakdown, FLOPs and time for a Chinchilla budget, VRAM per batch."""
    if gpu not in GPU_PEAK_FLOPS:
        raise ValueError(f"unknown GPU {gpu!r}; choose one of: {', '.join(GPU_PEAK_FLOPS)}")
    tokens = tokens_for_ratio(c, ratio)
    hours = training_time_s(c, tokens, GPU_PEAK_FLOPS[gpu], mfu) / 3600
    return "\n".join([
        c.describe(), "", format_breakdown(c), "",
        f"FLOPs per token          {flops_per_token(c):,}",
        f"tokens at {ratio:g}:1          {fmt_count(tokens)}",
        f"time on {gpu} at {mfu:.0%} MFU: {hours:.2f} h",
        "", f"training VRAM at sequence_len {c.sequence_len} ({'compiled' if compile else 'eager'}, estimate):",
        format_vram_table(c, batch_sizes, gpu_mem_gb * GiB, compile=compile),
    ])


def main(argv=None) -> int:
    from .presets import UnknownPresetError, get_preset
    ap = argparse.ArgumentParser(prog="python -m tinylab.calc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="ittybitty", help="starting architecture (default ittybitty)")
    for knob in ("depth", "model-dim", "head-dim", "n-head", "n-kv-head", "vocab-size", "seq-len"):
        ap.add_argument(f"--{knob}", type=int, default=None)
    ap.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--gpu-mem-gb", type=float, default=24.0, help="GPU memory in GiB (default 24: RTX 3090)")
    ap.add_argument("--batch-sizes", default="8,16,32,48,64", help="comma-separated device batch sizes")
    ap.add_argument("--gpu", default="RTX 3090", help=f"peak FLOPs for the time estimate: {', '.join(GPU_PEAK_FLOPS)}")
    ap.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOPs utilisation (default 0.4)")
    ap.add_argument("--ratio", type=float, default=CHINCHILLA_RATIO, help="tokens per parameter (default 20)")
    ap.add_argument("--no-compile", action="store_true", help="estimate VRAM for eager (uncompiled) training")
    a = ap.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--batch-sizes must be positive integers separated by commas, got {a.batch_sizes!r}")
    try:
        c = get_preset(a.preset).model.with_knobs(depth=a.depth, model_dim=a.model_dim,
                              head_dim=a.head_dim, n_head=a.n_head, n_kv_head=a.n_kv_head,
                              vocab_size=a.vocab_size, sequence_len=a.seq_len, tie_embeddings=a.tie_embeddings)
        text = report(c, gpu=a.gpu, mfu=a.mfu, ratio=a.ratio, gpu_mem_gb=a.gpu_mem_gb,
                      batch_sizes=batch_sizes, compile=not a.no_compile)
    except (UnknownPresetError, ConfigError, ValueError) as e:
        ap.error(str(e))
    print(text)
    return 0


def __getattr__(name):  # re-export the VRAM estimator (tinylab.vram imports this module)
    if name in ("vram_estimate", "max_device_batch", "activation_bytes_per_token"):
        from . import vram
        return getattr(vram, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
