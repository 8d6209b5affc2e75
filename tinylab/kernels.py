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


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests/test_kernels.py)


def softcap_cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, softcap: float) -> torch.Tensor:
    """Per-row losses (fp32); logits (N, V), row-contiguous, are overwritten by d(sum of losses)/d(logits)."""
    interpret = interpreting()
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


# ------------------------------------------------------------------------------------ rotary + QK-norm
# norm(rotary(x)) for q and k in one pass each way. Inductor compiles the pair into kernels that run
# at 2.1× (forward) and 2.7× (backward) their bandwidth floor (docs/perf-notes.md); here the forward
# reads x once and writes y, the backward reads x and dy and writes dx, recomputing the RMS (a
# rotation keeps each pair's length, so the RMS of rotated x is the RMS of x). Measured on an H100 at
# ittybitty's shapes, q and k of one layer and micro-batch, forward + backward: 0.79 ms against
# Inductor's 1.15 ms (docs/bench/h100_kernel_candidates.txt). A torch.library triton_op, so a
# torch.compile'd model calls the kernels without a graph break.

ROPE_BLOCK_ROWS = 64  # 64 rows × 64 channels: 8 KB of bf16 per program; 12,288 programs for ittybitty's q
RMS_EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default eps when it computes in fp32


@triton.jit
def _row_offsets(rows, T, H, sb, st, sh, HALF: tl.constexpr):
    """Element offsets of the first half of rows (b, t, h) = unravel(rows) in a (B, T, H, 2·HALF) tensor."""
    h = rows % H
    t = (rows // H) % T
    b = rows // (H * T)
    off = b.to(tl.int64) * sb + t.to(tl.int64) * st + h.to(tl.int64) * sh
    return off[:, None] + tl.arange(0, HALF)[None, :]


@triton.jit
def _rotary_tables(cos_ptr, sin_ptr, rows, mask, T, H, HALF: tl.constexpr):
    t = (rows // H) % T
    idx = t[:, None] * HALF + tl.arange(0, HALF)[None, :]
    c = tl.load(cos_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    return c, s


@triton.jit
def _rope_rmsnorm_fwd_kernel(x_ptr, cos_ptr, sin_ptr, y_ptr, n_rows, T, H, sb, st, sh, eps,
                             HALF: tl.constexpr, BLOCK_R: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    m = (rows < n_rows)[:, None]
    xo = _row_offsets(rows, T, H, sb, st, sh, HALF)
    c, s = _rotary_tables(cos_ptr, sin_ptr, rows, m, T, H, HALF)
    x1 = tl.load(x_ptr + xo, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + xo + HALF, mask=m, other=0.0).to(tl.float32)
    rstd = tl.rsqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)[:, None]
    yo = rows.to(tl.int64)[:, None] * (2 * HALF) + tl.arange(0, HALF)[None, :]
    tl.store(y_ptr + yo, ((x1 * c + x2 * s) * rstd).to(y_ptr.dtype.element_ty), mask=m)
    tl.store(y_ptr + yo + HALF, ((x2 * c - x1 * s) * rstd).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _rope_rmsnorm_bwd_kernel(x_ptr, dy_ptr, cos_ptr, sin_ptr, dx_ptr, n_rows, T, H, sb, st, sh,
                             dsb, dst, dsh, eps, HALF: tl.constexpr, BLOCK_R: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    m = (rows < n_rows)[:, None]
    xo = _row_offsets(rows, T, H, sb, st, sh, HALF)
    dyo = _row_offsets(rows, T, H, dsb, dst, dsh, HALF)
    c, s = _rotary_tables(cos_ptr, sin_ptr, rows, m, T, H, HALF)
    x1 = tl.load(x_ptr + xo, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + xo + HALF, mask=m, other=0.0).to(tl.float32)
    dy1 = tl.load(dy_ptr + dyo, mask=m, other=0.0).to(tl.float32)
    dy2 = tl.load(dy_ptr + dyo + HALF, mask=m, other=0.0).to(tl.float32)
    rstd = tl.rsqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)[:, None]
    y1, y2 = (x1 * c + x2 * s) * rstd, (x2 * c - x1 * s) * rstd
    # RMSNorm backward on the rotated row u: du = rstd·(dy − y·mean(dy·y)); then rotate back: dx = Rᵀ du
    dot = ((tl.sum(dy1 * y1, axis=1) + tl.sum(dy2 * y2, axis=1)) / (2 * HALF))[:, None]
    du1, du2 = rstd * (dy1 - y1 * dot), rstd * (dy2 - y2 * dot)
    do = rows.to(tl.int64)[:, None] * (2 * HALF) + tl.arange(0, HALF)[None, :]
    tl.store(dx_ptr + do, (du1 * c - du2 * s).to(dx_ptr.dtype.element_ty), mask=m)
    tl.store(dx_ptr + do + HALF, (du1 * s + du2 * c).to(dx_ptr.dtype.element_ty), mask=m)


def _traceable(kernel):
    """The launch torch.compile can trace (wrap_triton). Under the interpreter nothing is traced, and torch
    2.11's wrap_triton refuses the interpreter's kernels (2.13 accepts them), so they are launched directly."""
    return kernel if interpreting() else torch.library.wrap_triton(kernel)


def _rope_grid(x: torch.Tensor, cos: torch.Tensor):
    B, T, H, D = x.shape
    assert x.stride(3) == 1 and D % 2 == 0 and cos.numel() == T * D // 2 and cos.is_contiguous()
    n_rows = B * T * H
    return (triton.cdiv(n_rows, ROPE_BLOCK_ROWS),), n_rows, T, H, D // 2


@torch.library.triton_op("tinylab::rope_rms_norm", mutates_args=())
def rope_rms_norm(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """norm(apply_rotary_emb(x, cos, sin)) for x (B, T, H, D): a contiguous y in x.dtype.

    cos, sin: contiguous tables holding exactly T × D/2 values (the model's (1, T, 1, D/2) slices)."""
    grid, n_rows, T, H, half = _rope_grid(x, cos)
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    _traceable(_rope_rmsnorm_fwd_kernel)[grid](
        x, cos, sin, y, n_rows, T, H, x.stride(0), x.stride(1), x.stride(2), RMS_EPS,
        HALF=half, BLOCK_R=ROPE_BLOCK_ROWS, num_warps=4)
    return y


@torch.library.triton_op("tinylab::rope_rms_norm_backward", mutates_args=())
def rope_rms_norm_backward(x: torch.Tensor, dy: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    grid, n_rows, T, H, half = _rope_grid(x, cos)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    _traceable(_rope_rmsnorm_bwd_kernel)[grid](
        x, dy, cos, sin, dx, n_rows, T, H, x.stride(0), x.stride(1), x.stride(2),
        dy.stride(0), dy.stride(1), dy.stride(2), RMS_EPS, HALF=half, BLOCK_R=ROPE_BLOCK_ROWS, num_warps=4)
    return dx


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # x, cos, sin: the RMS is recomputed, nothing else is kept


def _rope_rms_norm_grad(ctx, dy):
    x, cos, sin = ctx.saved_tensors
    dy = dy if dy.stride(3) == 1 else dy.contiguous()
    return rope_rms_norm_backward(x, dy, cos, sin), None, None


rope_rms_norm.register_autograd(_rope_rms_norm_grad, setup_context=_save_inputs)
