"""Triton kernels for CUDA (imported only when a CUDA tensor needs them).

softcap_cross_entropy_: the loss and the logits' gradient of z = c·tanh(l/c) against
targets, in two passes over each row of bf16 logits, the gradient overwriting the logits
in place. This is the memory-bound half of the lm_head: with a 24,576-way vocabulary the
logits of one micro-batch are gigabytes, so the number of times they cross HBM decides
its speed. Two reads and one write is the floor for an exact softmax gradient.

Because |z| ≤ c, exp(z - c) can neither overflow nor usefully underflow in fp32, so the
logsumexp needs no running maximum: lse = c + log Σ exp(z - c).

(A variant holding a whole 24,576-wide row in registers to read the logits only once was
slower on the H100: 284.8 vs 257.0 ms per ittybitty step; see docs/benchmarks.md.)
"""
import os

import torch
import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _softcap_ce_kernel(logits_ptr, stride, targets_ptr, loss_ptr, n_cols, softcap, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    target = tl.load(targets_ptr + row)
    valid = target >= 0
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n_cols
        z = softcap * _tanh(tl.load(base + cols, mask=mask, other=0.0).to(tl.float32) / softcap)
        acc += tl.where(mask, tl.exp(z - softcap), 0.0)
    lse = softcap + tl.log(tl.sum(acc, axis=0))
    safe = tl.where(valid, target, 0)
    z_target = softcap * _tanh(tl.load(base + safe).to(tl.float32) / softcap)
    tl.store(loss_ptr + row, tl.where(valid, lse - z_target, 0.0))
    keep = tl.where(valid, 1.0, 0.0)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n_cols
        th = _tanh(tl.load(base + cols, mask=mask, other=0.0).to(tl.float32) / softcap)
        p = tl.exp(softcap * th - lse)
        grad = (p - tl.where(cols == target, 1.0, 0.0)) * (1.0 - th * th) * keep
        tl.store(base + cols, grad.to(logits_ptr.dtype.element_ty), mask=mask)


def softcap_cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, softcap: float) -> torch.Tensor:
    """Per-row losses (fp32); logits (N, V), row-contiguous, are overwritten by d(sum of losses)/d(logits)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests/test_kernels.py)
    assert (logits.is_cuda or interpret) and logits.stride(1) == 1 and targets.numel() == logits.size(0)
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    if interpret:
        # The interpreter wraps an int argument in a 1-element NumPy array, which the loops' range() turns
        # back with int(): Triton 3.6 does int(array), refused by NumPy >= 2.4 ("only 0-dimensional arrays
        # can be converted to Python scalars"; Triton 3.9 squeezes first). A constexpr reaches the body as
        # is. CUDA launches are untouched: the same int argument, so the same compiled kernel.
        n_cols = tl.constexpr(n_cols)
    _softcap_ce_kernel[(n_rows,)](logits, logits.stride(0), targets.contiguous(), losses, n_cols, float(softcap),
                                  BLOCK=4096, num_warps=8)
    return losses
