"""lm_head + soft-capped cross-entropy, chunked so the full logits never exist.

For ittybitty a micro-batch of 48 × 2048 tokens has 98,304 × 24,576 logits: 9.7 GB in fp32,
written and re-read by the softcap, the softmax and their backward passes. That traffic
costs about as much time as all the model's matmuls. Here the tokens are processed in
chunks; for each chunk the forward pass also computes the gradients of x and of the
lm_head weight right away (the chunk's logits are consumed while still fresh), so autograd
only has to scale two stored gradients in backward. On CUDA the per-chunk softcap/softmax/
gradient math is tinylab.kernels' Triton kernel (two reads and one write of the logits);
elsewhere it is plain torch.

Without gradients (evaluation), the same chunking returns the loss or per-token losses.
"""
from __future__ import annotations

import torch

CHUNK_TOKENS = 8192  # 8192 × 24,576 bf16 logits = 0.4 GB of scratch at a time


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16 logits are upcast; fp64 stays fp64 for exact tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _chunk_loss_and_grad(logits: torch.Tensor, targets: torch.Tensor, softcap: float):
    """Summed loss of a chunk and d(loss)/d(logits) for z = softcap·tanh(logits/softcap).

    Targets of -1 contribute neither loss nor gradient.
    """
    z = softcap * torch.tanh(_fp32(logits) / softcap)
    lse = torch.logsumexp(z, dim=-1)
    valid = targets >= 0
    safe = targets.clamp(min=0).unsqueeze(1)
    loss = torch.where(valid, lse - z.gather(1, safe).squeeze(1), 0.0).sum()
    dz = torch.exp(z - lse.unsqueeze(1)).scatter_add(1, safe, torch.full_like(lse, -1.0).unsqueeze(1))
    dz = dz * valid.unsqueeze(1)
    return loss, (dz * (1.0 - (z / softcap) ** 2)).to(logits.dtype)


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


def _loss_and_grad_fn(device: torch.device, kernel: str):
    """kernel 'auto': the Triton kernel on CUDA when Triton is installed; else (or 'torch') the torch
    version, compiled on CUDA."""
    if device.type == "cuda" and kernel == "auto":
        try:
            import triton  # noqa: F401
            return _triton_loss_and_grad
        except ImportError:
            pass
    return _kernel(_chunk_loss_and_grad, device)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b. With bf16 operands on CUDA the GEMM accumulates straight into the fp32 acc (its
    epilogue adds, so no bf16-rounded product and no separate add kernel per chunk)."""
    if a.dtype != acc.dtype and acc.is_cuda:
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
        acc += a @ b


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, softcap, chunk, kernel):
        dtype = _compute_dtype(x)
        xc, wc = x.to(dtype), weight.to(dtype)
        grad_x = torch.empty_like(xc)
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
        loss = torch.zeros((), device=x.device, dtype=grad_w.dtype)
        step = _loss_and_grad_fn(x.device, kernel)
        for s in range(0, x.size(0), chunk):
            logits = xc[s:s + chunk] @ wc.t()
            loss_c, dlogits = step(logits, targets[s:s + chunk], softcap)
            loss += loss_c
            torch.mm(dlogits, wc, out=grad_x[s:s + chunk])
            _accumulate(grad_w, dlogits.t(), xc[s:s + chunk])
        n = (targets >= 0).sum().clamp(min=1)
        ctx.save_for_backward(grad_x, grad_w, n)
        ctx.dtypes = (x.dtype, weight.dtype)
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, n = ctx.saved_tensors
        scale = grad_loss / n
        return (grad_x * scale).to(ctx.dtypes[0]), (grad_w * scale).to(ctx.dtypes[1]), None, None, None, None


@torch.compiler.disable  # a Python loop over chunks; its inner kernel is compiled on its own
def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float,
                         reduction: str = "mean", chunk: int = CHUNK_TOKENS, kernel: str = "auto") -> torch.Tensor:
    """Cross-entropy of softcap·tanh((x @ weightᵀ)/softcap) against targets, without full logits.

    x: (N, d) final hidden states, weight: (V, d) lm_head, targets: (N,) with -1 = ignore.
    reduction 'mean' (over non-ignored targets, differentiable), 'sum' or 'none' (no grad).
    kernel 'auto' uses tinylab.kernels' Triton kernel for the training gradient on CUDA, 'torch' never does.
    """
    targets = targets.reshape(-1)
    if reduction == "mean" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, softcap, chunk, kernel)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    dtype = _compute_dtype(x)
    xc, wc = x.to(dtype), weight.to(dtype)
    step = _kernel(_chunk_losses, x.device)
    losses = torch.cat([step(xc[s:s + chunk] @ wc.t(), targets[s:s + chunk], softcap)
                        for s in range(0, x.size(0), chunk)])
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (targets >= 0).sum().clamp(min=1)
