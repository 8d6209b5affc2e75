"""lm_head + soft-capped cross-entropy, chunked so the full logits never exist.

For ittybitty a micro-batch of 48 × 2048 tokens has 98,304 × 24,576 logits: 9.7 GB in fp32,
written and re-read by the softcap, the softmax and their backward passes. That traffic
costs about as much time as all the model's matmuls. Here the tokens are processed in
chunks; for each chunk the forward pass also computes the gradients of x and of the
lm_head weight right away (the chunk's logits are consumed while still fresh), so autograd
only has to scale two stored gradients in backward. On CUDA the per-chunk softcap/softmax/
gradient math is tinylab.kernels' Triton kernel (two reads and one write of the logits);
elsewhere it is plain torch. On an sm_90 GPU with quack installed, kernel "auto" takes tinylab.scaled_exp's step
instead, whose GEMM never stores the logits; kernel "triton" keeps the Triton one.

kernel="fp8" runs the three GEMMs of each chunk in FP8 (torch._scaled_mm): x and the weight are
quantised once per call to float8_e4m3fn with per-tensor scales, the loss kernel writes the logits'
gradient (times FP8_GRAD_SCALE) as float8_e5m2 and a second kernel its transpose, so both backward
GEMMs get K-contiguous operands. Where FP8 can't run (a GPU below compute capability 8.9, shapes
not multiples of 16) the call takes the path above instead, so kernel="fp8" never fails for that.

Without gradients (evaluation), the same chunking returns the loss or per-token losses (never FP8), through a
second opaque op whose CUDA kernel reads each chunk's logits once.
"""
from __future__ import annotations

import functools

import torch

from . import calc, scaled_exp
from .devices import compute_dtype, triton_interpreting

CHUNK_TOKENS = 8192  # 8192 × 24,576 bf16 logits = 0.4 GB of scratch at a time
KERNELS = ("auto", "triton", "torch", "fp8", "fp8-fast")  # fp8-fast: fp8 with _scaled_mm's use_fast_accum
E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
# The logits' gradient is stored as e5m2 times this: |grad| ≤ 1 and 2**15 ≤ e5m2's max (57,344), and it lifts
# probabilities down to 2**-31 above e5m2's subnormal floor (2**-16). A power of two: scaling is exact.
FP8_GRAD_SCALE = 2.0 ** 15


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16 logits are upcast; fp64 stays fp64 for exact tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _softcap_loss_and_grad(logits: torch.Tensor, targets: torch.Tensor, softcap: float):
    """Summed loss of a chunk and d(loss)/d(logits) (at least fp32) for z = softcap·tanh(logits/softcap).

    Targets of -1 contribute neither loss nor gradient.
    """
    z = softcap * torch.tanh(_fp32(logits) / softcap)
    lse = torch.logsumexp(z, dim=-1)
    valid = targets >= 0
    safe = targets.clamp(min=0).unsqueeze(1)
    loss = torch.where(valid, lse - z.gather(1, safe).squeeze(1), 0.0).sum()
    dz = torch.exp(z - lse.unsqueeze(1)).scatter_add(1, safe, torch.full_like(lse, -1.0).unsqueeze(1))
    dz = dz * valid.unsqueeze(1)
    return loss, dz * (1.0 - (z / softcap) ** 2)


def _chunk_loss_and_grad(logits: torch.Tensor, targets: torch.Tensor, softcap: float):
    """The loss and gradient of _softcap_loss_and_grad, the gradient in the logits' dtype."""
    loss, grad = _softcap_loss_and_grad(logits, targets, softcap)
    return loss, grad.to(logits.dtype)


def _chunk_loss_and_grad_fp8(logits: torch.Tensor, targets: torch.Tensor, softcap: float):
    """The loss, and the gradient times FP8_GRAD_SCALE as float8_e5m2, row-major (N, V) and transposed (V, N):
    the torch version of tinylab.kernels.softcap_cross_entropy_fp8."""
    loss, grad = _softcap_loss_and_grad(logits, targets, softcap)
    g8 = (grad * FP8_GRAD_SCALE).to(torch.float8_e5m2)
    return loss, g8, g8.t().contiguous()


def _chunk_losses(logits: torch.Tensor, targets: torch.Tensor, softcap: float):
    z = softcap * torch.tanh(_fp32(logits) / softcap)
    nll = torch.logsumexp(z, dim=-1) - z.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)
    return torch.where(targets >= 0, nll, 0.0)


_compiled: dict[str, callable] = {}


def _kernel(fn, device: torch.device):
    """fn compiled into fused kernels on CUDA (once), plain eager elsewhere."""
    if device.type != "cuda":
        return fn
    if fn.__name__ not in _compiled:
        _compiled[fn.__name__] = torch.compile(fn, dynamic=False)
    return _compiled[fn.__name__]


def _triton_loss_and_grad(logits, targets, softcap):
    from .kernels import softcap_cross_entropy_
    return softcap_cross_entropy_(logits, targets, softcap).sum(), logits  # logits now hold the gradient


def _triton_or(triton_step, torch_step, device: torch.device, use_triton: bool):
    """triton_step when asked for and Triton is installed; else torch_step, compiled on CUDA."""
    if use_triton:
        try:
            import triton  # noqa: F401
            return triton_step
        except ImportError:
            pass
    return _kernel(torch_step, device)


def _loss_and_grad_fn(device: torch.device, kernel: str):
    """kernel 'auto' or 'triton': the Triton kernel on CUDA when Triton is installed; else (or 'torch') the torch
    version, compiled on CUDA."""
    use = device.type == "cuda" and kernel in ("auto", "triton")
    return _triton_or(_triton_loss_and_grad, _chunk_loss_and_grad, device, use)


def _triton_fp8_loss_and_grad(logits, targets, softcap):
    from .kernels import softcap_cross_entropy_fp8
    losses, g8, g8t = softcap_cross_entropy_fp8(logits, targets, softcap, FP8_GRAD_SCALE)
    return losses.sum(), g8, g8t


def _triton_losses(logits, targets, softcap):
    from .kernels import softcap_cross_entropy
    return softcap_cross_entropy(logits, targets, softcap)


def _losses_fn(device: torch.device, dtype: torch.dtype, kernel: str):
    """Evaluation's step: the losses-only Triton kernel (fp32 losses) on CUDA when Triton is installed, for logits of
    at most fp32, unless kernel is 'torch'; else the torch version (fp64 logits keep fp64 losses)."""
    use = device.type == "cuda" and dtype != torch.float64 and kernel != "torch"
    return _triton_or(_triton_losses, _chunk_losses, device, use)


def _fp8_loss_and_grad_fn(device: torch.device):
    """The Triton kernel on CUDA (and on CPU under Triton's interpreter, for tests) when Triton is installed;
    else the torch version, compiled on CUDA."""
    use = device.type == "cuda" or triton_interpreting()
    return _triton_or(_triton_fp8_loss_and_grad, _chunk_loss_and_grad_fp8, device, use)


@functools.cache
def _cpu_scaled_mm() -> bool:
    """Whether this torch has a CPU torch._scaled_mm (2.11 and 2.13 have)."""
    try:
        a = torch.zeros(16, 16, dtype=torch.float8_e4m3fn)
        one = torch.ones((), dtype=torch.float32)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return True
    except (AttributeError, NotImplementedError, RuntimeError):
        return False


def fp8_supported(device) -> bool:
    """Whether torch._scaled_mm's FP8 GEMMs run on `device`: an NVIDIA GPU with FP8 tensor cores (calc.fp8_capable:
    Ada, Hopper and later; not an RTX 3090; ROCm's FP8 types differ), or a CPU where this torch implements them."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.version.hip is None and calc.fp8_capable(torch.cuda.get_device_capability(device))
    return device.type == "cpu" and _cpu_scaled_mm()


def _fp8_fits(x: torch.Tensor, weight: torch.Tensor, chunk: int) -> bool:
    """Whether _scaled_mm takes every GEMM of the FP8 path: N, d, V and each chunk multiples of 16 (its size rule;
    with fp8's 1-byte elements that also makes every operand's leading dimension and chunk offset 16-byte
    aligned, which cuBLASLt needs)."""
    n, d = x.shape
    return all(k % 16 == 0 for k in (n, d, weight.size(0), min(chunk, n))) and fp8_supported(x.device)


def _quantize_fp8(t: torch.Tensor):
    """t (R, C) as float8_e4m3fn scaled by 448 / amax(|t|), its transposed contiguous copy (C, R), and the
    inverse scale (an fp32 scalar on t's device: no host sync)."""
    scale = E4M3_MAX / t.abs().amax().float().clamp(min=1e-12)
    t8 = (t.float() * scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return t8, t8.t().contiguous(), scale.reciprocal()


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b. With bf16 operands on CUDA the GEMM accumulates straight into the fp32 acc (its
    epilogue adds, so no bf16-rounded product and no separate add kernel per chunk)."""
    if a.dtype != acc.dtype and acc.is_cuda:
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc += a @ b


class _Chunks:
    """The chunk step in the compute dtype (bf16 under autocast): logits, the loss step writing their gradient in
    their place, then dx = g @ W and dW += gᵀ @ x."""

    def __init__(self, x, weight, kernel, dtype):
        self.x, self.w = x.to(dtype), weight.to(dtype)
        self.step = _loss_and_grad_fn(x.device, kernel)

    def __call__(self, s, e, targets, softcap, grad_x, grad_w):
        logits = self.x[s:e] @ self.w.t()
        loss, dlogits = self.step(logits, targets, softcap)
        torch.mm(dlogits, self.w, out=grad_x[s:e])
        _accumulate(grad_w, dlogits.t(), self.x[s:e])
        return loss


class _Fp8Chunks:
    """The same chunk step with FP8 GEMMs. cuBLASLt's FP8 GEMMs take a row-major first and a column-major second
    operand ("TN": both K-contiguous), hence the transposed copies: x8t, w8t here and the kernel's g8t."""

    def __init__(self, x, weight, fast_accum=False):
        quantize = _kernel(_quantize_fp8, x.device)
        self.x8, self.x8t, self.x_inv = quantize(x)
        self.w8, self.w8t, self.w_inv = quantize(weight)
        self.g_inv = torch.full((), 1.0 / FP8_GRAD_SCALE, dtype=torch.float32, device=x.device)  # no host sync
        self.step = _fp8_loss_and_grad_fn(x.device)
        self.fast_accum = fast_accum

    def _mm(self, a, b, scale_a, scale_b, out_dtype):
        return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype,
                                use_fast_accum=self.fast_accum)

    def __call__(self, s, e, targets, softcap, grad_x, grad_w):
        logits = self._mm(self.x8[s:e], self.w8.t(), self.x_inv, self.w_inv, torch.bfloat16)
        loss, g8, g8t = self.step(logits, targets, softcap)
        grad_x[s:e] = self._mm(g8, self.w8t.t(), self.g_inv, self.w_inv, grad_x.dtype)
        grad_w += self._mm(g8t, self.x8t[:, s:e].t(), self.g_inv, self.x_inv, torch.float32)
        return loss


def _chunk_step(x, weight, chunk, kernel, dtype, softcap):
    """The chunk step for `kernel`: FP8 where asked for and possible; for 'auto' the scaled-exp step where it runs
    (tinylab.scaled_exp: sm_90 with quack installed); else the bf16 (or x's dtype) one."""
    if kernel.startswith("fp8") and _fp8_fits(x, weight, chunk):
        return _Fp8Chunks(x, weight, fast_accum=kernel == "fp8-fast")
    step = _Chunks(x, weight, "auto" if kernel.startswith("fp8") else kernel, dtype)  # no FP8 here: exactly "auto"
    if kernel == "auto" and scaled_exp.fits(x, weight, softcap, dtype):
        return scaled_exp.ScaledExpChunks(fallback=step)
    return step


@torch.library.custom_op("tinylab::linear_cross_entropy_grads", mutates_args=())
def _loss_and_grads(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float, chunk: int,
                    kernel: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The summed loss and its gradients, chunk by chunk: d/dx in `dtype`, d/dW in (at least) fp32.

    An opaque op to torch.compile (a Python loop over chunks, its inner kernels compiled on their own), with
    its backward (two scalings) registered below, so that Inductor fuses that into the kernels around it."""
    step = _chunk_step(x, weight, chunk, kernel, dtype, softcap)
    grad_x = torch.empty_like(x, dtype=dtype)
    grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
    loss = torch.zeros((), device=x.device, dtype=grad_w.dtype)
    for s in range(0, x.size(0), chunk):
        loss += step(s, s + chunk, targets[s:s + chunk], softcap, grad_x, grad_w)
    return loss, grad_x, grad_w


@_loss_and_grads.register_fake
def _(x, weight, targets, softcap, chunk, kernel, dtype):
    acc = torch.promote_types(weight.dtype, torch.float32)
    return x.new_empty((), dtype=acc), torch.empty_like(x, dtype=dtype), torch.empty_like(weight, dtype=acc)


def _chunked_losses(x, weight, targets, softcap, chunk, dtype, step):
    """Per-token losses, `step` (logits, targets, softcap) → losses on each chunk's logits in `dtype`."""
    xc, wc = x.to(dtype), weight.to(dtype)
    return torch.cat([step(xc[s:s + chunk] @ wc.t(), targets[s:s + chunk], softcap)
                      for s in range(0, x.size(0), chunk)])


@torch.library.custom_op("tinylab::linear_cross_entropy_losses", mutates_args=())
def _losses(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float, chunk: int,
            kernel: str, dtype: torch.dtype) -> torch.Tensor:
    """Per-token losses (at least fp32) without gradients: the Triton kernel's one read of each chunk's logits on
    CUDA, the torch version elsewhere. Opaque to torch.compile like the training op: an evaluation graph that
    traced the chunk loop held a matmul and a logsumexp per chunk, ~8 s of a cold compile."""
    return _chunked_losses(x, weight, targets, softcap, chunk, dtype, _losses_fn(x.device, dtype, kernel))


@_losses.register_fake
def _(x, weight, targets, softcap, chunk, kernel, dtype):
    return x.new_empty(x.size(0), dtype=torch.promote_types(dtype, torch.float32))


def _save_grads(ctx, inputs, output):
    _, grad_x, grad_w = output
    ctx.mark_non_differentiable(grad_x, grad_w)
    ctx.save_for_backward(grad_x, grad_w)
    ctx.dtypes = (inputs[0].dtype, inputs[1].dtype)


def _scale_grads(ctx, grad_loss, *_):
    grad_x, grad_w = ctx.saved_tensors
    return (grad_x * grad_loss).to(ctx.dtypes[0]), (grad_w * grad_loss).to(ctx.dtypes[1]), None, None, None, None, None


_loss_and_grads.register_autograd(_scale_grads, setup_context=_save_grads)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float,
                         reduction: str = "mean", chunk: int = CHUNK_TOKENS, kernel: str = "auto") -> torch.Tensor:
    """Cross-entropy of softcap·tanh((x @ weightᵀ)/softcap) against targets, without full logits.

    x: (N, d) final hidden states, weight: (V, d) lm_head, targets: (N,) with -1 = ignore.
    reduction 'mean' (over non-ignored targets), 'sum' or 'none' (per-token losses; differentiated through plain
    torch chunks, a rarer need than training's 'mean').
    kernel 'auto' uses tinylab.scaled_exp's step where it runs (sm_90, quack installed), else tinylab.kernels' Triton
    kernel for the training gradient on CUDA; 'triton' always the Triton kernel on CUDA, 'torch' never;
    'fp8' runs the training GEMMs in FP8 where it can (else the Triton step), 'fp8-fast' also with cuBLASLt's fast
    FP8 accumulation. Without gradients (evaluation) each chunk's logits are read once, by tinylab.kernels'
    losses-only kernel on CUDA unless kernel is 'torch', never in FP8.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    targets = targets.reshape(-1)
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if reduction == "mean" and grad:
        loss, _, _ = _loss_and_grads(x, weight, targets, softcap, chunk, kernel, compute_dtype(x))
        return loss / (targets >= 0).sum().clamp(min=1)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if grad:  # per-token losses to differentiate
        losses = _chunked_losses(x, weight, targets, softcap, chunk, compute_dtype(x), _kernel(_chunk_losses, x.device))
    else:  # evaluation
        losses = _losses(x, weight, targets, softcap, chunk, kernel, compute_dtype(x))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (targets >= 0).sum().clamp(min=1)
