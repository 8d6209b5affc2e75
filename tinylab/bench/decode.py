"""Sampling speed: prefill and decode tokens per second of tinylab.engine (CPU or GPU).

Random weights decode exactly as fast as trained ones, so this needs no run.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from ..engine import generate
from ..model import build_model


def bench(config, streams: Sequence[int] = (1, 8), prompt_tokens: int = 128, new_tokens: int = 64,
          device: str = "cpu", use_cache: bool = True, seed: int = 0) -> list[dict]:
    """Prefill and decode throughput of randomly initialised weights, one row per stream count."""
    torch.manual_seed(seed)
    model = build_model(config, device=device).eval()
    prompt = torch.randint(config.vocab_size, (prompt_tokens,)).tolist()
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    rows = []
    for n in streams:
        for _ in generate(model, prompt, max_tokens=3, num_samples=n, seed=seed, use_cache=use_cache):
            pass  # warm-up: allocator, kernels, thread pool
        t0 = time.perf_counter()
        steps = generate(model, prompt, max_tokens=new_tokens, num_samples=n, temperature=1.0, seed=seed,
                         use_cache=use_cache)
        next(steps)
        sync()
        t1 = time.perf_counter()
        count = sum(1 for _ in steps)
        sync()
        t2 = time.perf_counter()
        rows.append(dict(streams=n, cache=use_cache, prompt_tokens=prompt_tokens, new_tokens=count + 1,
                         prefill_tok_s=prompt_tokens / (t1 - t0), decode_tok_s=n * count / (t2 - t1),
                         ms_per_step=1e3 * (t2 - t1) / max(count, 1)))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| streams | KV cache | prompt tokens | new tokens | prefill tok/s | decode tok/s | ms / step |",
             "|---:|:---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['streams']} | {'yes' if r['cache'] else 'no'} | {r['prompt_tokens']} | "
                     f"{r['new_tokens']} | {r['prefill_tok_s']:,.0f} | {r['decode_tok_s']:,.1f} | "
                     f"{r['ms_per_step']:.1f} |")
    return "\n".join(lines)
