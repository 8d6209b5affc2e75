"""Triton kernels for CUDA (imported only when a CUDA tensor needs them).

softcap_cross_entropy_: the loss and the logits' gradient of z = c·tanh(l/c) against
targets, in two passes over each row of bf16 logits, the gradient overwriting the logits
in place. This is the memory-bound half of the lm_head: with a 24,576-way vocabulary the
logits of one micro-batch are gigabytes, so the number of times they cross HBM decides
its speed. Two reads and one write is the floor for an exact softmax gradient.

Because |z| ≤ c, exp(z - c) can neither overflow nor usefully underflow in fp32, so the
logsumexp needs no running maximum: lse = c + log Σ exp(z - c). On NVIDIA GPUs its tanh is one
tanh.approx.f32 instruction: with exp and a division (and two divisions by c) the kernel was bound by
the special-function unit, 0.545 ms per 8,192 × 24,576 chunk on an H100; then 0.389–0.421 (two calls), at
HBM's rate for three passes; with CE_TILE's fewer, wider programs 0.318 (against 0.389 in the same call), a
row's second read mostly served by L2.
softcap_cross_entropy is the same kernel without the second pass, for evaluation: losses only, one read.

(A variant holding a whole 24,576-wide row in registers to read the logits only once was
slower on the H100: 284.8 vs 257.0 ms per ittybitty step; again with the one-instruction tanh, 0.39–0.50 ms
per chunk against two passes' 0.389 in 4096 × 8 and 0.318 in CE_TILE; see docs/benchmarks.md.)

softcap_cross_entropy_fp8: the same math for tinylab.loss' FP8 path; the gradient, times a fixed
scale, is written as float8_e5m2, then transposed by a tiled kernel, so that both backward GEMMs get
an operand contiguous along their K (what cuBLASLt's FP8 wants).

rope_rms_norm: rotary embedding + QK-norm in one pass each way. relu2_mlp: the MLP with ReLU² in the
epilogues of its two GEMMs (a TMA-fed persistent GEMM on sm_90, a pointer-based one elsewhere).
"""
import functools

import torch
import triton
import triton.language as tl

from . import cute
from .devices import nvidia_capability, triton_interpreting


@triton.jit
def _tanh(x, APPROX: tl.constexpr):
    """tanh(x): with APPROX one MUFU.TANH instruction (sm_75+, relative error below 2**-10.9, under the bf16
    logits' own rounding); else exp and a division, which is what Triton's CPU interpreter can run. (By that
    bound the gradient's 1 − tanh² factor could be off by ~1e-3 absolute: large relative to the factor only for
    logits beyond ~3c, whose gradient is under 1% of the others'; tested to |l| ≈ 2.3c.)"""
    if APPROX:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _exp_z(logits, mask, inv_c, k, APPROX: tl.constexpr):
    """exp(z - c) = 2**(k·(tanh(l/c) - 1)) for z = c·tanh(l/c) and k = c·log2(e), 0 where masked: the terms of the
    logsumexp's Σ (pass 1)."""
    th = _tanh(logits.to(tl.float32) * inv_c, APPROX)
    return tl.where(mask, tl.exp2(k * th - k), 0.0)


@triton.jit
def _grad(logits, lse2, is_target, keep, inv_c, k, APPROX: tl.constexpr):
    """keep·(softmax(z) − onehot)·(1 − tanh²(l/c)): d(loss)/d(logits) times keep, 0 for ignored rows (pass 2);
    lse2 is the logsumexp in base 2, so softmax(z) = 2**(k·tanh(l/c) − lse2)."""
    th = _tanh(logits.to(tl.float32) * inv_c, APPROX)
    p = tl.exp2(k * th - lse2)
    return (p - tl.where(is_target, 1.0, 0.0)) * (1.0 - th * th) * keep


@triton.jit
def _round_e5m2(x):
    """fp32 x rounded to nearest (ties to even) to a value e5m2 holds, still fp32, so that the cast to e5m2 after
    it is exact. The GPU's cast rounds to nearest by itself, but Triton's interpreter doesn't (3.6 truncates;
    3.9 rounds and drops the carry: 1.9 becomes 1.0; both lose bits in the subnormals): this way both give
    torch's bits. Normal range: add 2**20 - 1 (+1 if bit 21 is set) to the magnitude bits and clear the 21
    bits e5m2 hasn't (a carry out of the mantissa bumps the exponent, as it should). Below 2**-14 e5m2's
    subnormals are the multiples of 2**-16: adding and taking away 192 = 1.5·2**7 rounds x to one of them
    (fp32 numbers near 192 are 2**-16 apart)."""
    bits = x.to(tl.int32, bitcast=True)
    normal = ((bits + 0xFFFFF + ((bits >> 21) & 1)) & -0x200000).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(x) < 6.103515625e-05, (x + 192.0) - 192.0, normal)


def _jit_any_alignment(*pointers: str):
    """triton.jit, the `pointers` left unspecialised on their alignment where this Triton can (3.2 and later)."""
    try:
        return triton.jit(do_not_specialize_on_alignment=list(pointers))
    except TypeError:
        return triton.jit


# The targets are read one per row, so their alignment buys nothing; left unspecialised, one compiled kernel serves
# the training batches (targets at an 8-byte offset: a view one token into x's buffer) and the evaluation's (copies).
@_jit_any_alignment("targets_ptr")
def _softcap_ce_kernel(logits_ptr, stride, targets_ptr, loss_ptr, grad_ptr, grad_stride, n_cols, softcap,
                       grad_scale, BLOCK: tl.constexpr, GRAD: tl.constexpr, E5M2: tl.constexpr, APPROX: tl.constexpr):
    """One row per program: its loss, and (where GRAD) its gradient into grad_ptr's row: the logits' own row, in
    place, for the bf16 version; times grad_scale and rounded for e5m2 where E5M2."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    out = grad_ptr + row * grad_stride
    target = tl.load(targets_ptr + row)
    valid = target >= 0
    inv_c = 1.0 / softcap
    k = softcap * 1.4426950408889634  # c·log2(e): exp(c·t) = 2**(k·t)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n_cols
        acc += _exp_z(tl.load(base + cols, mask=mask, other=0.0), mask, inv_c, k, APPROX)
    lse2 = k + tl.log2(tl.sum(acc, axis=0))  # log2 Σ exp(z)
    safe = tl.where(valid, target, 0)
    z_target = softcap * _tanh(tl.load(base + safe).to(tl.float32) * inv_c, APPROX)
    tl.store(loss_ptr + row, tl.where(valid, lse2 * 0.6931471805599453 - z_target, 0.0))
    if GRAD:  # a constexpr: the losses-only kernel has no second pass
        keep = tl.where(valid, grad_scale, 0.0)  # grad_scale: 1.0 for the bf16 version
        for off in range(0, n_cols, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            mask = cols < n_cols
            grad = _grad(tl.load(base + cols, mask=mask, other=0.0), lse2, cols == target, keep, inv_c, k, APPROX)
            if E5M2:
                grad = _round_e5m2(grad)
            tl.store(out + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _transpose_kernel(src_ptr, dst_ptr, n_rows, n_cols, BLOCK: tl.constexpr):
    """dst (C, R) = srcᵀ for a contiguous src (R, C), in BLOCK × BLOCK tiles."""
    rows = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    tile = tl.load(src_ptr + rows.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask)
    tl.store(dst_ptr + cols.to(tl.int64)[:, None] * n_rows + rows[None, :], tl.trans(tile), mask=tl.trans(mask))


interpreting = triton_interpreting  # Triton's CPU interpreter (tests/test_kernels.py)


TANH_APPROX = True  # the loss kernels' tanh is one MUFU.TANH where the GPU has it (False: exp and a division)


def tanh_approx(device: torch.device, asked: bool | None = None) -> bool:
    """Use PTX's tanh.approx.f32 on `device`? `asked` if given, else on NVIDIA GPUs that have it (compute capability
    7.5+; not under Triton's interpreter, not on ROCm) unless TANH_APPROX is switched off."""
    if asked is not None:
        return asked
    capability = nvidia_capability(device)
    return TANH_APPROX and capability is not None and capability >= (7, 5)


def _loop_bound(n: int):
    """An int that a kernel's range() loops to: passed as is on CUDA, as a constexpr under the interpreter.

    The interpreter wraps an int argument in a 1-element NumPy array, which the loops' range() turns back
    with int(): Triton 3.6 does int(array), refused by NumPy >= 2.4 ("only 0-dimensional arrays can be
    converted to Python scalars"; Triton 3.9 squeezes first). A constexpr reaches the body as is. CUDA
    launches are untouched: the same int argument, so the same compiled kernel."""
    return tl.constexpr(n) if interpreting() else n


def _check_logits(logits: torch.Tensor, targets: torch.Tensor) -> None:
    assert (logits.is_cuda or interpreting()) and logits.stride(1) == 1 and targets.numel() == logits.size(0)


# One row per program, the row in 8192-wide blocks by 16 warps: 0.318 ms per 8192 × 24,576 chunk on an H100 against
# 0.389 with 4096 by 8 (docs/bench/h100_ce/ce_tile_sweep.txt): fewer rows in flight, so a row's second read comes
# from L2 (3.8 TB/s counted as three passes, above HBM's 3.35). FP8's row kernel: 0.426 ms with its transpose.
# Not measured on an RTX 3090: its 6 MB of L2 holds neither tile's rows in flight, so both read three times there.
CE_TILE = dict(BLOCK=8192, num_warps=16)


def _softcap_ce(logits, targets, softcap, grad, grad_scale=1.0, approx=None):
    """Launch _softcap_ce_kernel over logits' rows; per-row losses (fp32). grad: where the gradient goes (None: not
    computed; logits itself: in place; a float8_e5m2 tensor: scaled by grad_scale and rounded)."""
    _check_logits(logits, targets)
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, device=logits.device, dtype=torch.float32)
    out = logits if grad is None else grad
    _softcap_ce_kernel[(n_rows,)](logits, logits.stride(0), targets.contiguous(), losses, out, out.stride(0),
                                  _loop_bound(n_cols), float(softcap), float(grad_scale), GRAD=grad is not None,
                                  E5M2=out.dtype == torch.float8_e5m2, APPROX=tanh_approx(logits.device, approx),
                                  **CE_TILE)
    return losses


def softcap_cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, softcap: float, approx: bool | None = None
                           ) -> torch.Tensor:
    """Per-row losses (fp32); logits (N, V), row-contiguous, are overwritten by d(sum of losses)/d(logits).

    approx: tanh as one instruction (default: tanh_approx(logits.device))."""
    return _softcap_ce(logits, targets, softcap, logits, approx=approx)


def softcap_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, softcap: float, approx: bool | None = None
                          ) -> torch.Tensor:
    """Per-row losses (fp32) of logits (N, V), row-contiguous and left as they are: one read (evaluation)."""
    return _softcap_ce(logits, targets, softcap, None, approx=approx)


TRANSPOSE_BLOCK = 128  # 128 × 128 bytes a tile: 0.164 ms for 8192 × 24,576 fp8 on an H100 (2.45 TB/s);
# torch's g8.t().contiguous() took 1.38 ms


def softcap_cross_entropy_fp8(logits: torch.Tensor, targets: torch.Tensor, softcap: float, g_scale: float,
                              approx: bool | None = None):
    """Per-row losses (fp32) of logits (N, V), row-contiguous and left as they are, and d(sum of losses)/d(logits)
    times g_scale as float8_e5m2, twice: g8 (N, V) and its transpose g8t (V, N), both contiguous.

    |grad| ≤ 1, so g_scale up to 57,344 (e5m2's max) can't overflow; tinylab.loss uses FP8_GRAD_SCALE = 2**15.
    softcap_cross_entropy_'s one-row programs write g8, then a tiled transpose writes g8t: 0.52 ms for an
    8192 × 24,576 chunk on an H100 (the bf16 kernel: 0.42; docs/bench/h100_relu2/lm_head_tanh.txt; 0.75 and 0.55
    before the tanh was one instruction, docs/bench/h100_lm_head_fp8.txt). One kernel of
    32-row tiles writing both took 1.15 to 1.25 ms there (256 programs keep too few loads in flight, and the
    transposed store costs more on top), so it was dropped. approx: as softcap_cross_entropy_'s."""
    n_rows, n_cols = logits.shape
    g8 = torch.empty((n_rows, n_cols), device=logits.device, dtype=torch.float8_e5m2)
    g8t = torch.empty((n_cols, n_rows), device=logits.device, dtype=torch.float8_e5m2)
    losses = _softcap_ce(logits, targets, softcap, g8, g_scale, approx)
    grid = (triton.cdiv(n_cols, TRANSPOSE_BLOCK), triton.cdiv(n_rows, TRANSPOSE_BLOCK))
    _transpose_kernel[grid](g8.view(torch.uint8), g8t.view(torch.uint8), n_rows, n_cols, BLOCK=TRANSPOSE_BLOCK,
                            num_warps=8)
    return losses, g8, g8t


@_jit_any_alignment("targets_ptr")
def _scaled_exp_glue_kernel(sum_exp_ptr, n_tiles, target_logit_ptr, targets_ptr, e_ptr, e_stride, x_ptr, x_stride,
                            loss_ptr, v_ptr, xs_ptr, dim, softcap, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                            APPROX: tl.constexpr):
    """One row per program (see scaled_exp_glue): its loss, its target's entry of E, v and xs."""
    row = tl.program_id(0).to(tl.int64)
    tiles = tl.arange(0, BLOCK_T)
    s = tl.sum(tl.load(sum_exp_ptr + row * n_tiles + tiles, mask=tiles < n_tiles, other=0.0), axis=0)  # Σ exp(z − c)
    target = tl.load(targets_ptr + row)
    valid = target >= 0
    t = _tanh(tl.load(target_logit_ptr + row) / softcap, APPROX)
    z_target = softcap * t
    tl.store(loss_ptr + row, tl.where(valid, softcap + tl.log(s) - z_target, 0.0))
    # E's target entry: (p_y − 1)(1 − t²) / v with p_y = exp(z_y − c) / s and v = 1 / s
    fix = (tl.exp(z_target - softcap) - s) * (1.0 - t * t)
    tl.store(e_ptr + row * e_stride + tl.where(valid, target, 0), fix.to(e_ptr.dtype.element_ty), mask=valid)
    v = tl.where(valid, 1.0 / s, 0.0)
    tl.store(v_ptr + row, v)
    v = v.to(xs_ptr.dtype.element_ty).to(tl.float32)  # xs = bf16(v)·x: v as the dW GEMM sees it
    cols = tl.arange(0, BLOCK_D)
    for off in range(0, dim, BLOCK_D):
        mask = off + cols < dim
        x = tl.load(x_ptr + row * x_stride + off + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(xs_ptr + row * dim + off + cols, (x * v).to(xs_ptr.dtype.element_ty), mask=mask)


def scaled_exp_glue(sum_exp: torch.Tensor, target_logit: torch.Tensor, targets: torch.Tensor, e: torch.Tensor,
                    x: torch.Tensor, softcap: float, approx: bool | None = None):
    """The step between tinylab.scaled_exp's two halves, for rows i of one chunk.

    In: sum_exp (N, T) fp32, the partial sums Σ exp(z − c) over T column tiles of row i (z = c·tanh(l/c) for the
    raw logits l); target_logit (N,) fp32, l at the row's target; targets (N,) (−1: ignored); e (N, V), the scaled
    numerators exp(z − c)·(1 − tanh²(l/c)); x (N, d), the lm_head's input. Out: per-row losses (fp32,
    log Σ exp(z) − z_target, 0 where ignored), v (N,) = 1 / Σ exp(z − c) (0 where ignored), xs = bf16(v)·x
    (N, d); e's target entries are overwritten so that v·e is d(loss)/dl = (softmax(z) − onehot)·(1 − tanh²).
    approx: tanh as one instruction (default: tanh_approx(e.device))."""
    assert (e.is_cuda or interpreting()) and e.stride(1) == 1 and x.stride(1) == 1 and sum_exp.is_contiguous()
    n_rows, n_tiles = sum_exp.shape
    losses = torch.empty(n_rows, device=e.device, dtype=torch.float32)
    v = torch.empty(n_rows, device=e.device, dtype=torch.float32)
    xs = torch.empty(x.shape, device=e.device, dtype=e.dtype)
    _scaled_exp_glue_kernel[(n_rows,)](sum_exp, n_tiles, target_logit.contiguous(), targets.contiguous(), e,
                                       e.stride(0), x, x.stride(0), losses, v, xs, _loop_bound(x.size(1)),
                                       float(softcap), BLOCK_T=triton.next_power_of_2(n_tiles),
                                       BLOCK_D=min(512, triton.next_power_of_2(x.size(1))),
                                       APPROX=tanh_approx(e.device, approx), num_warps=4)
    return losses, v, xs


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


# ------------------------------------------------------------------------------------ MLP: ReLU² in the GEMM
# The MLP is c_proj(relu(c_fc(x))²). With cuBLAS GEMMs, ReLU² is two more passes over the 4d-wide
# activation: forward reads h and writes a = relu(h)², backward reads da and h and writes dh (for
# ittybitty 0.27 + 0.40 ms per layer and micro-batch on an H100, at their bandwidth floor). Here
# both ride in a Triton GEMM's epilogue: the forward GEMM writes a straight from its fp32
# accumulator, and the backward GEMM da = dy·W_proj multiplies by 2·relu(h) = 2·√a before storing dh,
# so h is never stored (a, which c_proj's weight gradient needs anyway, is all that is saved).
# On an H100 (sm_90) the GEMM is persistent, one program per SM walking the tiles, its operands moved
# by TMA; elsewhere (an RTX 3090) it is the classic pointer-based Triton GEMM. Measured at ittybitty's
# shapes per layer and micro-batch (docs/bench/h100_relu2/mlp_*.txt): forward 320 µs against cuBLAS's
# 306 µs GEMM + 269 µs ReLU², backward 485 against 309 + 397 µs (the pointer-based kernel: 445 and 572).

@triton.jit
def _grouped_tile(tile, num_m, num_n, GROUP_M: tl.constexpr):
    """(row, column) of output tile number `tile`, in groups of GROUP_M tile rows, so that programs running at
    the same time share the b columns they read (in L2)."""
    first_m = (tile // (GROUP_M * num_n)) * GROUP_M
    rows_here = min(num_m - first_m, GROUP_M)
    return first_m + (tile % (GROUP_M * num_n)) % rows_here, (tile % (GROUP_M * num_n)) // rows_here


@triton.jit
def _relu2_or_times_2sqrt(acc, aux, EPI: tl.constexpr):
    """EPI 1: relu(acc)² (the forward); EPI 2: acc·2·√aux (the backward, aux = relu(h)²)."""
    if EPI == 1:
        r = tl.maximum(acc, 0.0)
        return r * r
    return acc * 2.0 * tl.sqrt(aux.to(tl.float32))


@triton.jit
def _mm_epilogue_kernel(a_ptr, b_ptr, c_ptr, aux_ptr, M, N, K, sam, sak, sbk, sbn,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                        EPI: tl.constexpr, EVEN: tl.constexpr):
    """c (M, N) = epilogue(a (M, K) · b (K, N)), one BM × BN tile per program; aux (M, N) is contiguous like c."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BM), tl.cdiv(N, BN), GROUP_M)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a = a_ptr + rm[:, None].to(tl.int64) * sam + rk[None, :] * sak
    b = b_ptr + rk[:, None] * sbk + rn[None, :].to(tl.int64) * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        if EVEN:
            acc += tl.dot(tl.load(a), tl.load(b))
        else:
            acc += tl.dot(tl.load(a, mask=(rm[:, None] < M) & (rk[None, :] < K - k), other=0.0),
                          tl.load(b, mask=(rk[:, None] < K - k) & (rn[None, :] < N), other=0.0))
        a += BK * sak
        b += BK * sbk
    off = rm[:, None].to(tl.int64) * N + rn[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    aux = tl.load(aux_ptr + off, mask=mask, other=0.0) if EPI == 2 else acc
    tl.store(c_ptr + off, _relu2_or_times_2sqrt(acc, aux, EPI).to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mm_epilogue_tma_kernel(a_desc, b_desc, c_desc, aux_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr,
                            BK: tl.constexpr, GROUP_M: tl.constexpr, EPI: tl.constexpr, B_NK: tl.constexpr,
                            NUM_SMS: tl.constexpr):
    """The same on sm_90: persistent (the tile loop and the K loop are one flattened, software-pipelined loop,
    so the next tile's loads overlap this one's epilogue), TMA loads and stores (out of bounds: zeros in,
    nothing out). b is (N, K) where B_NK, else (K, N). The epilogue works on two BM × BN/2 halves: half the
    shared memory to stage the store and aux through, which lets 3 stages of 128 × 256 × 64 fit."""
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_SMS, flatten=True):
        pid_m, pid_n = _grouped_tile(tile, num_m, num_n, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            if B_NK:
                acc = tl.dot(a_desc.load([om, k]), b_desc.load([on, k]).T, acc)
            else:
                acc = tl.dot(a_desc.load([om, k]), b_desc.load([k, on]), acc)
        acc0, acc1 = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
        aux0 = aux_desc.load([om, on]) if EPI == 2 else acc0
        c_desc.store([om, on], _relu2_or_times_2sqrt(acc0, aux0, EPI).to(c_desc.dtype))
        aux1 = aux_desc.load([om, on + BN // 2]) if EPI == 2 else acc1
        c_desc.store([om, on + BN // 2], _relu2_or_times_2sqrt(acc1, aux1, EPI).to(c_desc.dtype))


TMA_TILE = dict(BM=128, BN=256, BK=64, num_warps=8, num_stages=3)  # the fastest measured on an H100, both ways


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _tma_ok(*tensors: torch.Tensor) -> bool:
    """TMA on an sm_90 GPU: every tensor 2-D with a contiguous last dimension, its start and row stride
    16-byte aligned (the allocator aligns storages; what can break it is an offset or an odd width)."""
    if nvidia_capability(tensors[0].device) != (9, 0):
        return False
    return all(t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0
               and (t.storage_offset() * t.element_size()) % 16 == 0 for t in tensors)


def _mm_epilogue_tma(a, b, c, aux, epi):
    from triton.tools.tensor_descriptor import TensorDescriptor

    (M, K), N = a.shape, c.size(1)
    b_nk = b.stride(0) == 1  # b (K, N) is the transpose of a contiguous (N, K): W_fc
    bm, bn, bk = TMA_TILE["BM"], TMA_TILE["BN"], TMA_TILE["BK"]
    desc = TensorDescriptor.from_tensor
    a_d, c_d = desc(a, [bm, bk]), desc(c, [bm, bn // 2])
    b_d = desc(b.t(), [bn, bk]) if b_nk else desc(b, [bk, bn])
    aux_d = desc(aux, [bm, bn // 2]) if aux is not None else c_d
    sms = _sm_count(a.device.index or 0)  # the stride of the tile loop: one compiled kernel for every M
    grid = (min(sms, triton.cdiv(M, bm) * triton.cdiv(N, bn)),)
    _mm_epilogue_tma_kernel[grid](
        a_d, b_d, c_d, aux_d, M, N, K, BM=bm, BN=bn, BK=bk, GROUP_M=8, EPI=epi, B_NK=b_nk,
        NUM_SMS=sms, num_warps=TMA_TILE["num_warps"], num_stages=TMA_TILE["num_stages"])


def _mm_epilogue(a: torch.Tensor, b: torch.Tensor, aux: torch.Tensor | None, epi: int,
                 tma: bool | None = None) -> torch.Tensor:
    """epilogue(a (M, K) · b (K, N)) as a new (M, N) tensor; tma: the sm_90 Triton kernel (default: quack's ping-pong
    GEMM where tinylab.cute runs, else the TMA kernel where it can run)."""
    if tma is None and cute.runs_on(a.device):
        return cute.relu2_gemm(a, b, aux, epi)
    (M, K), N = a.shape, b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    operands = [a, b if b.stride(1) == 1 else b.t(), c] + ([aux] if aux is not None else [])
    if _tma_ok(*operands) if tma is None else tma:
        _mm_epilogue_tma(a, b, c, aux, epi)
        return c
    # 128 × 128 × 32 in 3 stages fits the 100 KB of shared memory of an RTX 3090; 32 × 32 × 16 for the interpreter
    bm, bn, bk, cfg = (32, 32, 16, {}) if interpreting() else (128, 128, 32, dict(num_warps=4, num_stages=3))
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _mm_epilogue_kernel[grid](a, b, c, c if aux is None else aux, M, N, _loop_bound(K), a.stride(0), a.stride(1),
                              b.stride(0), b.stride(1), BM=bm, BN=bn, BK=bk, GROUP_M=8, EPI=epi,
                              EVEN=M % bm == 0 and N % bn == 0 and K % bk == 0, **cfg)
    return c


# Opaque custom ops rather than triton_ops: torch.compile calls them with real tensors, so the TMA descriptors are
# built from those (Inductor's own rebuilding of descriptors for a traced triton_op gave NaN losses in the
# compiled step with torch 2.11, where the eager call was right).
@torch.library.custom_op("tinylab::relu2_mlp", mutates_args=())
def relu2_mlp(x: torch.Tensor, w_fc: torch.Tensor, w_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = relu(x·W_fcᵀ)²·W_projᵀ for x (N, d), W_fc (h, d), W_proj (d, h), all one dtype; also returns the
    activation a = relu(x·W_fcᵀ)² (N, h) that the backward needs."""
    a = _mm_epilogue(x, w_fc.t(), None, epi=1)
    return a @ w_proj.t(), a


@relu2_mlp.register_fake
def _(x, w_fc, w_proj):
    return x.new_empty(x.size(0), w_proj.size(0)), x.new_empty(x.size(0), w_fc.size(0))


@torch.library.custom_op("tinylab::relu2_mlp_dh", mutates_args=())
def relu2_mlp_dh(dy: torch.Tensor, w_proj: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """dh = (dy·W_proj)·2·√a: the gradient at the pre-activation h (d(relu(h)²)/dh = 2·relu(h) = 2·√a)."""
    return _mm_epilogue(dy, w_proj, a, epi=2)


@relu2_mlp_dh.register_fake
def _(dy, w_proj, a):
    return torch.empty_like(a)


def _save_mlp(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(*inputs, output[1])


def _relu2_mlp_grad(ctx, dy, _):
    x, w_fc, w_proj, a = ctx.saved_tensors
    dh = relu2_mlp_dh(dy.contiguous(), w_proj, a)
    return dh @ w_fc, dh.t() @ x, dy.t() @ a


relu2_mlp.register_autograd(_relu2_mlp_grad, setup_context=_save_mlp)
