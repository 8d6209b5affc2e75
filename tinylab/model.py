"""The tinylab GPT: nanochat's model family with every dimension an explicit knob.

- rotary position embeddings, no learned positions
- QK-norm: queries and keys are RMS-normalised after rotary
- ReLU² MLP of width 4·model_dim
- RMSNorm without learnable weights, no biases anywhere
- untied wte / lm_head by default (tie_embeddings=True shares one matrix)
- grouped-query attention through n_kv_head
- a KV cache for incremental decoding (tinylab.engine)

Build a large config on the meta device to inspect it without memory:

    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device="cuda"); model.init_weights()

Four implementation options (not architecture: the same weights give the same function) are
constructor arguments, so a benchmark can compare them without touching any global: `loss` picks
how lm_head + cross-entropy is computed (LOSS_IMPLS), `lowp_residual` whether the residual stream
is bf16 under autocast, `rope_norm` whether rotary + QK-norm is tinylab.kernels' fused Triton
op on CUDA ("auto": when Triton is installed) or torch ops that torch.compile fuses ("torch"), and
`relu2` the same for the MLP's ReLU² (in the epilogues of Triton GEMMs, bf16 only).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig
from .devices import compute_dtype
from .loss import linear_cross_entropy

LOGIT_SOFTCAP = 15.0  # nanochat squashes logits with 15·tanh(x/15): stabler early training
ROPE_BASE = 10_000
LOSS_IMPLS = {  # how forward(idx, targets) computes lm_head + soft-capped cross-entropy
    "chunked": "chunks of tokens, logits never all materialised (tinylab.loss); on sm_90 with quack installed never "
               "stored at all (tinylab.scaled_exp), else a Triton loss kernel on CUDA",
    "chunked-triton": "the same chunks, always with the Triton loss kernel on CUDA",
    "chunked-torch": "the same chunks with compiled torch ops instead of the Triton kernel",
    "chunked-fp8": "the same chunks with the training GEMMs in FP8 where the GPU has it (sm_89+), else as "
                   "chunked-triton",
    "plain": "materialised logits, then torch's cross-entropy (the reference)",
}

# linear_cross_entropy's kernel for each chunked implementation
LOSS_KERNELS = {"chunked": "auto", "chunked-triton": "triton", "chunked-torch": "torch", "chunked-fp8": "fp8"}


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with no learnable weight."""
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + head_dim/2) of x (B, T, H, D) by position-dependent angles."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False


def rotary_norm(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool) -> torch.Tensor:
    """QK-norm of rotated x: norm(apply_rotary_emb(x)); one Triton op on CUDA when `fused`."""
    if fused and x.is_cuda:
        from .kernels import rope_rms_norm
        return rope_rms_norm(x, cos, sin)
    return norm(apply_rotary_emb(x, cos, sin))


class KVCache:
    """Keys and values of every layer for a batch of streams, preallocated up to max_len positions."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype=torch.float32):
        shape = (config.depth, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0  # positions already filled; advanced after the last layer writes

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def insert(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H_kv, T, D) after the filled prefix; return all keys/values so far."""
        t0, t1 = self.pos, self.pos + k.size(2)
        self.k[layer, :, :, t0:t1] = k
        self.v[layer, :, :, t0:t1] = v
        if layer == self.k.size(0) - 1:
            self.pos = t1
        return self.k[layer, :, :, :t1], self.v[layer, :, :, :t1]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d = config.model_dim
        self.c_q = nn.Linear(d, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(d, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(d, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.fused_rope_norm = False  # set by GPT (its rope_norm option)

    def forward(self, x, cos_sin, kv_cache: KVCache | None = None):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        fused = self.fused_rope_norm and kv_cache is None  # decoding's odd shapes would each JIT-compile the kernel
        q, k = rotary_norm(q, cos, sin, fused), rotary_norm(k, cos, sin, fused)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        prefix = 0
        if kv_cache is not None:
            prefix = kv_cache.pos
            k, v = kv_cache.insert(self.layer_idx, k, v)
        gqa = self.n_kv_head != self.n_head
        if prefix == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif T == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        else:  # a chunk after a cached prefix: the prefix in full, the chunk causally
            mask = torch.ones(T, prefix + T, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.model_dim, config.mlp_dim, bias=False)
        self.c_proj = nn.Linear(config.mlp_dim, config.model_dim, bias=False)
        self.fused_relu2 = False  # set by GPT (its relu2 option)

    def forward(self, x, fused: bool = True):
        """fused=False keeps torch's ops: decoding calls it so (its odd shapes would each JIT-compile a GEMM)."""
        dtype = compute_dtype(x)
        if fused and self.fused_relu2 and x.is_cuda and dtype == torch.bfloat16:
            # ReLU² inside the GEMMs' epilogues; bf16 only: the backward takes relu(h) as √(relu(h)²), which fp16's
            # range would flush to 0 for h below ~1e-4
            from .kernels import relu2_mlp
            y, _ = relu2_mlp(x.reshape(-1, x.size(-1)).to(dtype), self.c_fc.weight.to(dtype),
                             self.c_proj.weight.to(dtype))
            return y.view(*x.shape[:-1], -1)
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, cos_sin, kv_cache=None):
        x = x + self.attn(norm(x), cos_sin, kv_cache)
        return x + self.mlp(norm(x), fused=kv_cache is None)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, *, loss: str = "chunked", lowp_residual: bool = True,
                 rope_norm: str = "auto", relu2: str = "auto"):
        super().__init__()
        if loss not in LOSS_IMPLS:
            raise ValueError(f"loss must be one of {list(LOSS_IMPLS)}, got {loss!r}")
        for name, choice in (("rope_norm", rope_norm), ("relu2", relu2)):
            if choice not in ("auto", "fused", "torch"):
                raise ValueError(f"{name} must be 'auto', 'fused' or 'torch', got {choice!r}")
        self.config = config
        self.loss_impl = loss
        self.lowp_residual = lowp_residual  # bf16 residual under autocast: half the bytes of every norm and add
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.model_dim),
            h=nn.ModuleList([Block(config, i) for i in range(config.depth)]),
        ))
        self.lm_head = nn.Linear(config.model_dim, config.vocab_size, bias=False)
        fused = lambda choice: choice == "fused" or (choice == "auto" and triton_available())  # noqa: E731
        for block in self.transformer.h:
            block.attn.fused_rope_norm = config.fusable_rope_norm and fused(rope_norm)
            block.mlp.fused_relu2 = fused(relu2)
        self._tie()
        cos, sin = self._rotary_tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tie(self):
        if self.config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def _rotary_tables(self, device=None):
        c = self.config
        inv_freq = ROPE_BASE ** -(torch.arange(0, c.head_dim, 2, dtype=torch.float32, device=device) / c.head_dim)
        angles = torch.outer(torch.arange(c.sequence_len, dtype=torch.float32, device=device), inv_freq)
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, T, 1, D/2)

    @torch.no_grad()
    def init_weights(self):
        """nanochat's init: embeddings N(0, 1), small lm_head, uniform matrices, zero output projections.

        A tied matrix serves as lm_head too, so it starts at N(0, 1/model_dim) to keep
        the initial logits O(1) and the initial loss near ln(vocab_size).
        """
        self._tie()  # to_empty() from the meta device unties shared parameters
        d = self.config.model_dim
        wte, lm_head = self.transformer.wte.weight, self.lm_head.weight
        if self.config.tie_embeddings:
            wte.normal_(0.0, d ** -0.5)
        else:
            wte.normal_(0.0, 1.0)
            lm_head.normal_(0.0, 0.001)
        bound = math.sqrt(3) * d ** -0.5  # uniform with the std of N(0, 1/d)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight.uniform_(-bound, bound)
            block.attn.c_proj.weight.zero_()
            block.mlp.c_proj.weight.zero_()
        self.cos, self.sin = self._rotary_tables(device=wte.device)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Split the parameters by how they are optimised: Muon for block matrices, AdamW for the rest."""
        groups = dict(matrix=list(self.transformer.h.parameters()), embedding=[self.transformer.wte.weight],
                      unembedding=[] if self.config.tie_embeddings else [self.lm_head.weight])
        assert sum(len(g) for g in groups.values()) == len(list(self.parameters()))
        return groups

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stem(self, idx: torch.Tensor) -> torch.Tensor:
        """The residual stream's start: norm(wte(idx))."""
        x = self.transformer.wte(idx)
        if self.lowp_residual and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # bf16 residual stream under autocast, as nanochat
        return norm(x)

    def head(self, x: torch.Tensor, targets: torch.Tensor | None, loss_reduction: str):
        """The final norm, then lm_head's logits or, given targets, the loss (see forward)."""
        B, T, _ = x.shape
        x = norm(x)
        if targets is not None and self.loss_impl != "plain":  # the (B·T, vocab) logits are never materialised
            return linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets, LOGIT_SOFTCAP,
                                        loss_reduction, kernel=LOSS_KERNELS[self.loss_impl])
        logits = self.lm_head(x).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(B * T, -1), targets.reshape(-1), ignore_index=-1, reduction=loss_reduction)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, loss_reduction: str = "mean", regions: Regions | None = None):
        """Logits (B, T, vocab) in fp32 when targets is None, else the cross-entropy loss.

        Targets equal to -1 are ignored; loss_reduction 'none' gives per-token losses (B·T,).
        With a kv_cache, idx continues the cached positions. `regions` (CompiledRegions') runs the stem, blocks
        and head compiled.
        """
        B, T = idx.shape
        t0 = kv_cache.pos if kv_cache is not None else 0
        if t0 + T > self.config.sequence_len:
            raise ValueError(f"sequence of {t0 + T} tokens exceeds the model's context of "
                             f"{self.config.sequence_len}: shorten the prompt or max_tokens")
        cos_sin = self.cos[:, t0:t0 + T], self.sin[:, t0:t0 + T]
        stem, call, head = regions or (GPT.stem, _call, GPT.head)
        x = stem(self, idx)
        for block in self.transformer.h:
            x = call(block, x, cos_sin, kv_cache)
        return head(self, x, targets, loss_reduction)


def _call(module: nn.Module, *args):
    return module(*args)


class Regions(NamedTuple):
    """GPT.forward's compiled pieces: stem(model, idx), call(block, x, cos_sin, kv_cache), head(model, x, ...)."""
    stem: Callable
    call: Callable
    head: Callable


class CompiledRegions(nn.Module):
    """`net` (a GPT, or DDP around one) run with torch.compile applied by region: a graph for the stem, one for the
    head (final norm and loss) and one for a block, which every layer reuses (Dynamo lifts a block's parameters to
    graph inputs, so ittybitty's four layers compile once, not four times). Against one whole-model graph: about
    half the cold compile time, for a little more step time at the regions' edges (docs/benchmarks.md §1, "session
    5"). The model itself is not changed, so decoding and evaluation elsewhere still run it eagerly."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.regions = Regions(*(torch.compile(fn, dynamic=False) for fn in (GPT.stem, _call, GPT.head)))

    def forward(self, idx, targets=None, loss_reduction="mean"):
        return self.net(idx, targets, loss_reduction=loss_reduction, regions=self.regions)

    @property
    def no_sync(self):  # DDP's, for gradient accumulation (an AttributeError when net is no DDP)
        return self.net.no_sync


_compiled = False  # whether compile_model ran in this process since the last forget_compiled


def forget_compiled() -> None:
    """Empty Dynamo's caches if a model was compiled: call it before compiling another. Every model's regions run
    the same functions (GPT.forward for a whole graph), so each architecture compiled in one process adds to their
    caches, and past Dynamo's recompile limit (8) a notebook's ninth architecture would train eagerly, at a fraction
    of the speed. Graphs of an earlier model are recompiled if it runs again (Inductor's caches on disk make that
    quick). With nothing compiled it does nothing: on CUDA, reset() imports much of Inductor, which a command's
    start-up does later, alongside the thread that compiles tinylab's kernels."""
    global _compiled
    if _compiled:
        torch._dynamo.reset()
        _compiled = False


def compile_model(net: nn.Module, regions: bool = True) -> nn.Module:
    """What training runs: `net` compiled by region (CompiledRegions) or as one whole graph."""
    global _compiled
    _compiled = True
    return CompiledRegions(net) if regions else torch.compile(net, dynamic=False)


def build_model(config: GPTConfig, device="cpu", **options) -> GPT:
    """Allocate on the meta device, then materialise and initialise on `device` (options: see GPT)."""
    with torch.device("meta"):
        model = GPT(config, **options)
    model.to_empty(device=device)
    model.init_weights()
    return model
