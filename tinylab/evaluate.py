"""Validation bits per byte, and the unigram baseline a trained model has to beat.

Bits per byte (bpb) divides the summed cross-entropy (in bits) by the number of UTF-8 bytes
the target tokens stand for. Unlike per-token loss it does not change with the tokenizer's
vocabulary, so runs with different vocab sizes are comparable. Special tokens (BOS) stand
for zero bytes and are left out of both sums, as nanochat does.

The unigram baseline is the best a model can do that ignores context: the entropy of the
val split's own token frequencies, per byte. A model that is not below it has learned
nothing but token counts.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist


@torch.no_grad()
def evaluate_bpb(model, batches, token_bytes: torch.Tensor, autocast=None) -> float:
    """Val bpb over the (x, y) batches of a finite iterable (e.g. tinylab.loader.val_batches).

    token_bytes: int tensor (vocab_size,) on the model's device, bytes per token id (0 = special).
    Under torch.distributed the sums are all-reduced, so every rank returns the same value.
    """
    autocast = autocast or nullcontext()
    nats = bytes_ = None
    for x, y in batches:
        with autocast:
            loss = model(x, y, loss_reduction="none").float().view(-1)
        y = y.reshape(-1)
        nb = torch.where(y >= 0, token_bytes[y.clamp(min=0)], 0)
        n = (loss * (nb > 0)).sum(dtype=torch.float64)
        b = nb.sum(dtype=torch.float64)
        nats, bytes_ = (n, b) if nats is None else (nats + n, bytes_ + b)
    if nats is None:
        raise ValueError("evaluate_bpb got no batches: raise eval_tokens to at least one batch")
    if dist.is_available() and dist.is_initialized():
        both = torch.stack([nats, bytes_])
        dist.all_reduce(both)
        nats, bytes_ = both[0], both[1]
    return (nats / (math.log(2) * bytes_)).item()


def unigram_bpb(token_ids: np.ndarray, token_bytes: np.ndarray) -> float:
    """Bits per byte of the val tokens' own unigram distribution (an oracle for context-free models)."""
    token_bytes = np.asarray(token_bytes, dtype=np.int64)
    counts = np.bincount(np.asarray(token_ids, dtype=np.int64).ravel(), minlength=len(token_bytes))
    counts = np.where(token_bytes > 0, counts, 0)  # specials count neither as loss nor as bytes
    n = counts.sum()
    if n == 0:
        raise ValueError("no (non-special) tokens to measure: the val split is empty")
    nz = counts[counts > 0]
    bits = -(nz * np.log2(nz / n)).sum()
    return float(bits / (counts * token_bytes).sum())


def val_unigram_bpb(tokenizer, corpus: str, max_chars: int | None = None, *, num_shards: int = 0) -> float:
    """unigram_bpb of a corpus's val split (of num_shards, a run's knob: see tinylab.data.list_shards), tokenised
    with `tokenizer`."""
    from .data import iter_texts

    ids = tokenizer.encode_batch(list(iter_texts(corpus, "val", max_chars=max_chars, num_shards=num_shards)))
    flat = np.fromiter((t for doc in ids for t in doc), dtype=np.int64)
    return unigram_bpb(flat, tokenizer.token_bytes)
