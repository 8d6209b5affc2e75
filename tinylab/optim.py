"""Muon for the block matrices, AdamW for everything else (nanochat's split).

Muon (Keller Jordan, 2024) keeps SGD momentum per matrix and replaces the update by the
nearest semi-orthogonal matrix, computed with a quintic Newton–Schulz iteration. Every
singular direction then moves by the same amount, which lets hidden matrices train at a
much larger learning rate than Adam allows. Embeddings and the unembedding are lookups /
a classifier rather than linear maps between hidden spaces, so they stay on AdamW.

Learning rates (defaults as nanochat's seed run):
    embedding_lr   0.2    AdamW, wte
    unembedding_lr 0.004  AdamW, lm_head
    matrix_lr      0.02   Muon, every 2-D block matrix; scaled by max(1, rows/cols)^0.5
    scalar_lr      0.004  AdamW, any non-matrix block parameter (none in today's GPT)
AdamW learning rates are multiplied by (model_dim / 768)^-0.5, nanochat's rule for
transferring them from its d768 reference width.

Tied embeddings: wte and lm_head are one Parameter, so it is optimised once, by AdamW, at
`tied_lr`, which defaults to unembedding_lr. The matrix starts at N(0, 1/model_dim) and its
rows are also the classifier, so the embedding's 0.2 would wreck the logits in a few steps;
the lm_head rate is the safe one (the input side is re-normalised by RMSNorm anyway).
"""
from __future__ import annotations

import torch

from .model import GPT

REFERENCE_DIM = 768  # nanochat's AdamW learning rates were tuned at this width
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic coefficients that maximise the slope at zero


def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalise G (U Vᵀ of its SVD) with `steps` Newton–Schulz iterations.

    The iteration does not converge to exactly U Vᵀ: the singular values land in roughly
    [0.7, 1.2], which trains as well and is cheap. bf16 on CUDA (it is stable there and 2× faster),
    fp32 elsewhere so CPU runs stay bit-reproducible.
    """
    a, b, c = NS_COEFFS
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    X = G.to(dtype)
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # iterate on the wide orientation: X Xᵀ is the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update is orthogonalised; for 2-D parameters only.

    Nesterov: the update is lerp(g, buf, momentum) with buf = lerp(buf, g, 1 - momentum).
    The step is scaled by max(1, rows/cols)^0.5 so tall matrices (the MLP's c_proj input side
    is wide, c_fc is tall) get a per-element update of comparable RMS.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        params = list(params)
        bad = [tuple(p.shape) for p in params if p.ndim != 2]
        if bad:
            raise ValueError(f"Muon optimises matrices only; got parameters of shapes {bad}: give them to AdamW")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            by_shape: dict[tuple, list] = {}
            for p, g in zip(params, self._nesterov_updates(params, group)):
                by_shape.setdefault(tuple(p.shape), []).append((p, g))
            # one Newton–Schulz on the stack of each shape: ittybitty's 24 matrices are 3 shapes, so 3 × 15
            # batched matmuls instead of 24 × 15 small ones (bit-identical on the CPU, see tests/test_optim.py)
            for pairs in by_shape.values():
                X = zeropower_via_newtonschulz5(torch.stack([g for _, g in pairs]), group["ns_steps"])
                p0 = pairs[0][0]
                torch._foreach_add_([p for p, _ in pairs], list(X.to(p0.dtype).unbind(0)),
                                    alpha=-group["lr"] * max(1.0, p0.size(-2) / p0.size(-1)) ** 0.5)

    def _nesterov_updates(self, params, group) -> list[torch.Tensor]:
        """Momentum buf = lerp(buf, g, 1 - momentum), then the Nesterov update lerp(g, buf, momentum), for all at once."""
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
        grads = [p.grad for p in params]
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        return torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs


def setup_optimizers(model: GPT, *, embedding_lr: float = 0.2, unembedding_lr: float = 0.004,
                     matrix_lr: float = 0.02, scalar_lr: float = 0.004, tied_lr: float | None = None,
                     weight_decay: float = 0.0, betas=(0.8, 0.95), eps: float = 1e-10,
                     momentum: float = 0.95) -> list[torch.optim.Optimizer]:
    """[AdamW, Muon] for a GPT, every group carrying `initial_lr` for the schedule (see module doc)."""
    groups = model.parameter_groups()
    scale = (model.config.model_dim / REFERENCE_DIM) ** -0.5
    matrices = [p for p in groups["matrix"] if p.ndim == 2]
    scalars = [p for p in groups["matrix"] if p.ndim != 2]
    if model.config.tie_embeddings:
        adam_groups = [dict(params=groups["embedding"], lr=(unembedding_lr if tied_lr is None else tied_lr) * scale,
                            name="tied")]
    else:
        adam_groups = [dict(params=groups["embedding"], lr=embedding_lr * scale, name="embedding"),
                       dict(params=groups["unembedding"], lr=unembedding_lr * scale, name="unembedding")]
    if scalars:
        adam_groups.append(dict(params=scalars, lr=scalar_lr * scale, name="scalar"))
    fused = next(model.parameters()).is_cuda
    adamw = torch.optim.AdamW(adam_groups, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
    muon = Muon(matrices, lr=matrix_lr, momentum=momentum)
    muon.param_groups[0]["name"] = "matrix"
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def apply_schedule(optimizers: list[torch.optim.Optimizer], lr_mult: float, momentum: float | None = None):
    """Set every group's lr to initial_lr × lr_mult, and Muon's momentum when given."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lr_mult
            if momentum is not None and isinstance(opt, Muon):
                group["momentum"] = momentum


def learning_rates(optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
    """Current lr by group name, for logging and config.json."""
    return {g["name"]: g["lr"] for opt in optimizers for g in opt.param_groups}
