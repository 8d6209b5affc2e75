"""lm_head + soft-capped cross-entropy on Hopper (sm_90) without the logits: the scaled-exp chunk step.

tinylab.loss's bf16 chunk step writes each chunk's logits (one GEMM), reads them twice and writes their gradient in
their place (tinylab.kernels' loss kernel), then runs the two backward GEMMs on that gradient. Here the logits never
reach memory. For a chunk of tokens x (N, d), the lm_head W (V, d), raw logits l = x·Wᵀ and t = tanh(l/c):

  GEMM 1  one sm_90 GEMM from quack (CuTe DSL; a ping-pong kernel, one warpgroup's epilogue running beside the
          other's MMAs), with tinylab.cute.softcap_exp's epilogue on its fp32 accumulator: it stores
          E = exp(z − c)·(1 − t²) for z = c·t (the softmax's numerator times the softcap's derivative) in bf16,
          and writes Σ exp(z − c) per row and 192-column tile, and each row's raw target logit. |z| ≤ c, so
          exp(z − c) lies in [e^(−2c), 1]: no running maximum is needed (as in tinylab.kernels).
  glue    tinylab.kernels.scaled_exp_glue, per row: the loss, E's target entry fixed, v = 1/Σ exp(z − c), xs = v·x.
  dx      = v ⊙ (E·W), dW += Eᵀ·xs, both cuBLAS, dW accumulated in fp32 as in tinylab.loss,
since d(loss)/dl = v·E = (softmax(z) − onehot)·(1 − t²). The loss kernel's three passes over the logits and the
logits' own write are gone; GEMM 1's store takes the logits' place.

tinylab.loss takes this step for kernel "auto" where fits() says it runs: an sm_90 GPU, bf16, quack installed
(`pip install -e ".[hopper]"`), a vocabulary that a tile divides.
"""
from __future__ import annotations

import torch

from . import cute

LOG2E = 1.4426950408889634
SOFTCAP_MAX = 40.0  # exp(z − c) ≥ e^(−2c) stays a normal fp32 and bf16 number up to c ≈ 43
# GEMM 1's tile width, the first that divides V (Σ exp is written per whole tile); the ping-pong kernel takes at most
# 208, in multiples of 16. 192 was the fastest of 128 and 192 for ittybitty (docs/benchmarks.md §1, session 12)
TILES_N = (192, 128, 64, 32, 16)
TILE_M = 128  # GEMM 1's tile height: a chunk of other than a multiple of 128 rows takes the bf16 step


def tile_n(vocab_size: int) -> int | None:
    return next((n for n in TILES_N if vocab_size % n == 0), None)


def fits(x: torch.Tensor, weight: torch.Tensor, softcap: float, dtype: torch.dtype) -> bool:
    """Can the scaled-exp step take this call? An sm_90 GPU with quack installed (tinylab.cute), bf16, a softcap in
    (0, SOFTCAP_MAX], a vocabulary that one of TILES_N divides, d a multiple of 8 (16-byte rows)."""
    return (dtype == torch.bfloat16 and 0 < softcap <= SOFTCAP_MAX and tile_n(weight.size(0)) is not None
            and x.size(1) % 8 == 0 and cute.runs_on(x.device))


class ScaledExpChunks:
    """tinylab.loss's chunk-step contract: step(s, e, targets, softcap, grad_x, grad_w) writes rows [s, e) of grad_x,
    adds to grad_w (fp32) and returns the chunk's summed loss. fallback: tinylab.loss's bf16 step on the same x and
    weight, for a chunk whose rows are not a multiple of TILE_M."""

    def __init__(self, fallback):
        self.x, self.w = fallback.x, fallback.w.contiguous()  # the bf16 copies the fallback made
        self.tile_n = tile_n(self.w.size(0))
        self.fallback = fallback
        self.scratch = {}

    def _buffers(self, rows: int):
        if rows not in self.scratch:  # reused by every chunk of this size (all but maybe the last)
            V, dev = self.w.size(0), self.x.device
            self.scratch[rows] = (torch.empty(rows, V, device=dev, dtype=self.w.dtype),
                                  torch.empty(rows, V // self.tile_n, device=dev, dtype=torch.float32),
                                  torch.empty(rows, device=dev, dtype=torch.float32))
        return self.scratch[rows]

    def __call__(self, s, e, targets, softcap, grad_x, grad_w):
        x = self.x[s:e]  # e may run past the last row
        if x.size(0) % TILE_M:
            return self.fallback(s, e, targets, softcap, grad_x, grad_w)
        if targets.data_ptr() % 16:  # quack loads them 16 bytes at a time; training's are a view one token in
            targets = targets.clone()
        E, sum_exp, target_logit = self._buffers(x.size(0))
        operands = dict(inv_c=1.0 / softcap, k=softcap * LOG2E, target=targets)  # the epilogue's inputs,
        sinks = dict(sum_exp=sum_exp, target_logit=target_logit)                   # and where it writes
        cute.softcap_exp().gemm(x, self.w, E, epi_args=operands | sinks, tile_M=TILE_M, tile_N=self.tile_n,
                                cluster_M=2, cluster_N=1, pingpong=True)
        from .kernels import scaled_exp_glue  # Triton: imported where a CUDA tensor needs it
        losses, v, xs = scaled_exp_glue(sum_exp, target_logit, targets, E, x, softcap)
        dx = grad_x[s:e]
        torch.mm(E, self.w, out=dx)
        dx.mul_(v[:, None])
        torch.addmm(grad_w, E.t(), xs, out_dtype=grad_w.dtype, out=grad_w)
        return losses.sum()
