"""Data speed: pre-tokenization tokens/s and how fast tinylab.loader feeds a device."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from .. import data
from ..loader import TokenLoader
from ..tokens import pretokenize, tokenize_shard


def bench(preset, tokenizer, *, batch_size: int | None = None, seq_len: int | None = None, device: str = "cpu",
          seconds: float = 3.0, log=print) -> dict:
    """Pre-tokenization tokens/s (fresh, single process) and loader tokens/s (windows -> int64 -> device)."""
    corpus, num_shards = preset.data.corpus, preset.data.num_shards
    with tempfile.TemporaryDirectory() as tmp:
        shards = data.list_shards(corpus, "train", num_shards)
        src = shards[0]
        t0 = time.perf_counter()
        n_tok, _ = tokenize_shard(src, tokenizer, Path(tmp) / "x.bin")
        pretok = n_tok / (time.perf_counter() - t0)
    log(f"pretokenize: {pretok / 1e6:.2f} M tok/s ({src.name}, {n_tok:,} tokens, {os.cpu_count()} cores)")
    tokens = pretokenize(corpus, tokenizer, "train", num_shards=num_shards, progress=True)
    B = preset.batch.device_batch_size if batch_size is None else batch_size
    T = preset.model.sequence_len if seq_len is None else seq_len
    loader = TokenLoader(tokens, "train", B, T, device=device,
                         shards=[p.stem for p in shards])
    sync = torch.cuda.synchronize if loader.device.type == "cuda" else (lambda: None)
    next(loader)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(loader)
        n += 1
    sync()
    rate = n * B * T / (time.perf_counter() - t0)
    log(f"loader: {rate / 1e6:.1f} M tok/s (B={B}, T={T}, device={device}, {n} batches)")
    return dict(pretokenize_tok_per_s=pretok, loader_tok_per_s=rate, batch_size=B, seq_len=T, device=device)
