"""`python -m tinylab.calc`: exact counts, FLOPs, a Chinchilla budget's time and VRAM per batch, as text.

    python -m tinylab.calc --preset ittybitty [--model-dim 768 --n-kv-head 2 ...] --gpu-mem-gb 24
"""
from __future__ import annotations

import sys

from ..config import GPTConfig, add_knob_arguments, knob_arguments
from ..errors import ArgumentParser, TinylabError, cli, positive, positive_ints
from ..presets import DEFAULT, get_preset
from .counts import CHINCHILLA_RATIO, GPU_PEAK_FLOPS, flops_per_token, param_counts, tokens_for_ratio, training_time_s
from .vram import GiB, group_vram, max_device_batch, vram_estimate


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
           gpu_mem_gb: float = 24, batch_sizes=(8, 16, 32, 48, 64), compile: bool = True,
           fp8_lm_head: bool = False) -> str:
    """The CLI's text: parameter breakdown, FLOPs and time for a Chinchilla budget, VRAM per batch."""
    if gpu not in GPU_PEAK_FLOPS:
        raise TinylabError(f"unknown GPU {gpu!r}; choose one of: {', '.join(GPU_PEAK_FLOPS)}")
    tokens = tokens_for_ratio(c, ratio)
    hours = training_time_s(c, tokens, GPU_PEAK_FLOPS[gpu], mfu) / 3600
    return "\n".join([
        c.describe(), "", format_breakdown(c), "",
        f"FLOPs per token          {flops_per_token(c):,}",
        f"tokens at {ratio:g}:1          {fmt_count(tokens)}",
        f"time on {gpu} at {mfu:.0%} MFU: {hours:.2f} h",
        "", f"training VRAM at sequence_len {c.sequence_len} ({'compiled' if compile else 'eager'}"
        f"{', FP8 lm_head' if fp8_lm_head else ''}, estimate):",
        format_vram_table(c, batch_sizes, gpu_mem_gb * GiB, compile=compile, fp8_lm_head=fp8_lm_head),
    ])


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m tinylab.calc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=DEFAULT, help=f"starting architecture (default {DEFAULT})")
    add_knob_arguments(ap, (GPTConfig,))
    ap.add_argument("--gpu-mem-gb", type=positive(float, "GiB"), default=24.0,
                    help="GPU memory in GiB (default 24: RTX 3090)")
    ap.add_argument("--batch-sizes", type=positive_ints, default=[8, 16, 32, 48, 64],
                    help="comma-separated device batch sizes (default 8,16,32,48,64)")
    ap.add_argument("--gpu", default="RTX 3090", choices=list(GPU_PEAK_FLOPS), help="peak FLOPs for the time estimate")
    ap.add_argument("--mfu", type=positive(float, "MFU", maximum=1), default=0.4,
                    help="assumed model-FLOPs utilisation, in (0, 1] (default 0.4)")
    ap.add_argument("--ratio", type=positive(float, "ratio", maximum=1e6), default=CHINCHILLA_RATIO,
                    help="tokens per parameter (default 20)")
    ap.add_argument("--no-compile", action="store_true", help="estimate VRAM for eager (uncompiled) training")
    ap.add_argument("--fp8-lm-head", action="store_true",
                    help="estimate VRAM for training with --fp8-lm-head where it runs (compute capability 8.9+: "
                         "Ada, Hopper; elsewhere training falls back to bf16)")
    a = ap.parse_args(argv)
    config = get_preset(a.preset).override(**knob_arguments(a, (GPTConfig,)))  # validated as trainable
    print(report(config.model, gpu=a.gpu, mfu=a.mfu, ratio=a.ratio, gpu_mem_gb=a.gpu_mem_gb,
                 batch_sizes=a.batch_sizes, compile=not a.no_compile, fp8_lm_head=a.fp8_lm_head))
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
