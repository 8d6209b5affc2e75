"""Sampling from a GPT: one prefill, then one cached token per step.

The prompt is run through the model once (prefill), filling a KV cache; every later step
feeds only the newly sampled token, so a step costs O(context) attention instead of a full
forward over the whole sequence. For several samples of one prompt the prompt is prefilled
once at batch 1 and the cache is replicated (`expand_cache`), as in nanochat's engine.

- `generate`     token ids, one list per step (one id per stream), greedy or sampled
- `TextStream`   token ids -> text pieces that are always whole UTF-8 characters
- `complete`     prompt text in, completion text out, streamed through a callback: the one
                 function behind the CLI (tinylab.complete) and the notebook widget

Decode speed: `python -m tinylab.bench decode`.

Context: a prompt longer than model.config.sequence_len is refused (PromptTooLongError);
generation stops by itself when the context is full (finish reason "context").
"""
from __future__ import annotations

import codecs
import math
import numbers
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .config import MAX_SEED
from .errors import TinylabError
from .model import GPT, KVCache


class GenerationError(TinylabError, ValueError):
    """Sampling settings or a prompt the engine cannot use; the message says what to change."""


class PromptTooLongError(GenerationError):
    pass


def expand_cache(cache: KVCache, batch_size: int) -> KVCache:
    """A copy of a batch-1 cache replicated to `batch_size` streams (same filled prefix)."""
    if cache.k.size(1) != 1:
        raise ValueError(f"expand_cache needs a batch-1 cache, got batch {cache.k.size(1)}")
    out = KVCache.__new__(KVCache)
    out.k = cache.k.expand(-1, batch_size, -1, -1, -1).clone()
    out.v = cache.v.expand(-1, batch_size, -1, -1, -1).clone()
    out.pos = cache.pos
    return out


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V).

    temperature 0 is greedy (argmax); top_k keeps the k largest logits; top_p keeps the
    smallest set of tokens whose probability reaches p (nucleus sampling, applied after top_k).
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # tokens entirely past the nucleus
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


MIN_TEMPERATURE = 1e-6  # below it, logits / temperature overflow to inf and sampling meets NaN: use 0 (greedy)


def check_settings(temperature: float, top_k: int | None, top_p: float | None, max_tokens: int):
    for name, value, kind in (("temperature", temperature, numbers.Real), ("top_p", top_p, numbers.Real),
                              ("top_k", top_k, numbers.Integral), ("max_tokens", max_tokens, numbers.Integral)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise GenerationError(f"{name} must be {'an integer' if kind is numbers.Integral else 'a number'}, "
                                  f"got {value!r}")
    if not math.isfinite(temperature) or (top_p is not None and not math.isfinite(top_p)):
        raise GenerationError(f"temperature and top_p must be finite numbers, got {temperature} and {top_p}")
    if temperature < 0 or 0 < temperature < MIN_TEMPERATURE:
        raise GenerationError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {temperature}")
    if top_k is not None and top_k < 1:
        raise GenerationError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise GenerationError(f"top_p must be in (0, 1] (or None), got {top_p}")
    if max_tokens < 1:
        raise GenerationError(f"max_tokens must be >= 1, got {max_tokens}")


def check_seed(seed) -> int | None:
    """A sampling seed as torch's generators take it: None (random) or an integer from 0 to MAX_SEED."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise GenerationError(f"seed must be an integer from 0 to {MAX_SEED} (or None for a random one), got {seed!r}")
    return int(seed)


def check_prompt(model: GPT, num_tokens: int):
    ctx = model.config.sequence_len
    if num_tokens == 0:
        raise GenerationError("empty prompt: give at least one token (complete() prepends BOS)")
    if num_tokens > ctx:
        raise PromptTooLongError(f"prompt is {num_tokens} tokens but the model's context is {ctx}: "
                                 f"shorten the prompt by at least {num_tokens - ctx} tokens")


def check_ids(model: GPT, prompt_ids: Sequence[int], num_samples) -> None:
    """Token ids the model has embeddings for, and a whole number of streams."""
    V = model.config.vocab_size
    bad = [t for t in prompt_ids if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t < V]
    if bad:
        raise GenerationError(f"prompt ids must be integers from 0 to {V - 1} (the model's vocabulary), got "
                              f"{bad[:3]}: encode the prompt with the run's tokenizer")
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise GenerationError(f"num_samples must be an integer >= 1, got {num_samples!r}")


@torch.inference_mode()
def generate(model: GPT, prompt_ids: Sequence[int], *, max_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             num_samples: int = 1, stop_ids: Sequence[int] = (), use_cache: bool = True) -> Iterator[list]:
    """Yield one list per step with the next token of each of `num_samples` streams.

    A stream that samples one of `stop_ids` yields None from then on (the stop token itself
    is not yielded); generation ends when every stream stopped, after `max_tokens` steps, or
    when the context (model.config.sequence_len) is full. use_cache=False recomputes the full
    forward each step: slow, but the reference the cached path must equal.
    """
    check_settings(temperature, top_k, top_p, max_tokens)
    seed = check_seed(seed)
    check_prompt(model, len(prompt_ids))
    check_ids(model, prompt_ids, num_samples)
    ctx, P = model.config.sequence_len, len(prompt_ids)
    steps = min(max_tokens, ctx - P + 1)  # the last sampled token never needs to be fed back
    device = model.lm_head.weight.device
    gen = torch.Generator(device=device).manual_seed(random.getrandbits(63) if seed is None else seed)
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    cache = None
    if use_cache:
        cache = KVCache(model.config, 1, P + steps - 1, device, dtype=model.lm_head.weight.dtype)
    logits = model(ids, kv_cache=cache)[:, -1].expand(num_samples, -1)
    if use_cache and num_samples > 1:
        cache = expand_cache(cache, num_samples)
    seq = ids.expand(num_samples, -1)
    for step in range(steps):
        nxt = sample_next(logits, temperature, top_k, top_p, gen)
        done |= torch.isin(nxt, stop)
        yield [None if d else t for t, d in zip(nxt.tolist(), done.tolist())]
        if done.all() or step == steps - 1:
            return
        if use_cache:
            logits = model(nxt[:, None], kv_cache=cache)[:, -1]
        else:
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            logits = model(seq)[:, -1]


class TextStream:
    """Token ids in, text out, never splitting a multi-byte UTF-8 character across pieces.

    An incremental decoder holds back the bytes of an unfinished character until the token
    that completes it arrives; `flush` ends the stream (an unfinished tail becomes U+FFFD).
    """

    def __init__(self, tokenizer):
        self._bytes = tokenizer.id_to_bytes  # a byte-level BPE token may hold part of a character
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._bytes(token_id))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


@dataclass
class Completion:
    prompt: str
    text: str                 # the completion only
    token_ids: list[int]      # the completion's tokens (stop token excluded)
    prompt_tokens: int        # including the BOS that was prepended
    finish_reason: str        # "stop" (BOS/end sampled), "length" (max_tokens), "context" (window full)
    seconds: float            # prefill + decode wall time

    @property
    def tok_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


def complete(model: GPT, tokenizer, prompt: str, *, temperature: float = 0.8, top_k: int | None = 50,
             top_p: float | None = None, max_tokens: int = 200, seed: int | None = 42,
             on_text: Callable[[str], None] | None = None, prompt_ids: Sequence[int] | None = None) -> Completion:
    """Continue `prompt` (BOS is prepended, as every training document starts with it).

    Stops at BOS (the start of a new document = the end of this one), after max_tokens, or
    when the context is full. `on_text` receives each new piece of text as it is decoded.
    `prompt_ids`: the prompt already encoded (with BOS), for a caller that checked its length.
    """
    prompt_ids = tokenizer.encode(prompt, prepend_bos=True) if prompt_ids is None else list(prompt_ids)
    stream, pieces, ids = TextStream(tokenizer), [], []
    emit = on_text or (lambda s: None)
    reason, t0 = "length", time.perf_counter()
    steps = generate(model, prompt_ids, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, seed=seed, stop_ids=(tokenizer.bos_id,))
    for (tok,) in steps:
        if tok is None:
            reason = "stop"
            break
        ids.append(tok)
        piece = stream.push(tok)
        if piece:
            pieces.append(piece)
            emit(piece)
    tail = stream.flush()
    if tail:
        pieces.append(tail)
        emit(tail)
    ctx_left = model.config.sequence_len - len(prompt_ids) + 1
    if reason == "length" and len(ids) == ctx_left and ctx_left < max_tokens:
        reason = "context"
    return Completion(prompt, "".join(pieces), ids, len(prompt_ids), reason, time.perf_counter() - t0)
