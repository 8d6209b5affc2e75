"""Training-memory estimate: a sum of named terms, each a tensor the training step really holds.

The model being estimated (tinylab.model + tinylab.optim + tinylab.loss on CUDA):
- parameters and their gradients are fp32;
- forward/backward run under torch.autocast(bfloat16) with a bf16 residual stream: every
  matmul input and saved activation is bf16, and autocast caches one bf16 copy of each
  block matrix;
- Muon keeps one fp32 momentum buffer per block matrix, AdamW two fp32 moments for wte and
  lm_head (one matrix when tied);
- attention is SDPA flash (O(T) memory: it saves q, k, v, the output and a logsumexp per row);
- the loss never materialises all logits: tinylab.loss processes LOSS_CHUNK_TOKENS tokens
  at a time (the Triton kernel overwrites each chunk's bf16 logits with their gradient) and
  stores only d(loss)/dx (bf16) and d(loss)/d(lm_head) (fp32) for backward.

The peak is taken at the end of the forward pass, when every saved activation, the loss
head's buffers and all persistent state are alive at once. The tensor terms are exact
consequences of the shapes; the named constants below hold what the shapes cannot say and
were fitted to peaks measured on an H100 (docs/benchmarks.md, "VRAM calibration"): refit
them with `python -m tinylab.bench vram` when the training step changes.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, GPTConfig
from ..paths import REPO
from .counts import param_counts

MiB = 2 ** 20
GiB = 2 ** 30  # GPU memory as sold: an RTX 3090's "24 GB" is 24 GiB

# Calibration: H100 80GB, torch 2.11+cu130, ittybitty and seed15m at device batch 8, 16, 32, 48, 64
# compiled, 16 and 48 eager, 16 and 48 compiled with the torch rotary/QK-norm and ReLU² (18 points);
# measured = torch.cuda.max_memory_reserved() + the CUDA context, over two optimizer steps of the real step
# (tinylab.bench vram, docs/bench/vram_h100_relu2.jsonl). With the constants below every point is within
# 4.6 % (table in docs/benchmarks.md).

# CUDA context + cuBLAS workspaces + kernel images: memory nvidia-smi shows but
# torch.cuda.memory_reserved() does not (total - free - reserved, measured 767-773 MiB).
CUDA_CONTEXT_BYTES = 768 * MiB
# Memory PyTorch's caching allocator reserves beyond the step's live tensors at the peak:
# freed blocks of earlier phases kept for reuse, cuBLAS/cuDNN workspaces and Inductor
# scratch. Least-squares fit over the 18 points: 352 MiB, independent of batch and model.
ALLOCATOR_RESERVE_BYTES = 352 * MiB
# torch.compile/Inductor memory outside PyTorch's allocator: measured ~0 (Triton's buffers
# come from the caching allocator and are inside the peak); kept as a knob.
COMPILE_WORKSPACE_BYTES = 0
# Measured per-token peak ÷ the saved-tensor count of activation_bytes_per_token (same fit):
# compiled 1.03 (Inductor fuses the norms and the residual adds and recomputes cheap pointwise
# results), eager 1.02 (eager keeps a few more intermediates, but the fused rotary + QK-norm and
# ReLU² ops save the same few tensors either way). Eager without those ops (CUDA without Triton) is not
# calibrated now: it needed 1.53 before they existed, so the estimate is low there.
ACTIVATION_FACTOR_COMPILED = 1.03
ACTIVATION_FACTOR_EAGER = 1.02
# Loss-head scratch per logit of one chunk: the bf16 logits, overwritten in place by their
# gradient (tinylab.kernels), so nothing else per logit.
LOSS_SCRATCH_BYTES = 2
LOSS_CHUNK_TOKENS = 8192  # mirrors tinylab.loss.CHUNK_TOKENS (a test keeps them equal)
# With --fp8-lm-head, per logit of one chunk, the FP8 gradient and its transpose (one byte each) next to the bf16
# logits; and once per micro-batch, x and the lm_head weight in e4m3, each in two layouts (one byte an element).
FP8_SCRATCH_BYTES = 2
FP8_COPIES = 2
# Memory max_device_batch leaves free: near a full card the allocator cannot place its last
# blocks (at batch 176 each MLP activation is a 1.4 GB block) and the estimate runs low there.
# Measured on the H100 with the allocator capped at 24 GiB minus the context (`python -m tinylab.bench
# fit`): ittybitty device batch 176 trains (estimate 22,451 MiB), 184 runs out of memory (estimate
# 23,375 MiB); with this headroom the answer is 176. (The step before ReLU² moved into the GEMMs needed
# 128 MiB: 131 trained, 132 did not.) One preset measured once: on a small card this is conservative.
FIT_HEADROOM_BYTES = 2048 * MiB

BF16, FP32, INT64 = 2, 4, 8


def activation_bytes_per_token(c: GPTConfig, *, compile: bool = True, fused_rope_norm: bool | None = None,
                               fused_relu2: bool = True) -> dict[str, int]:
    """Bytes one block saves for backward per token, by tensor (eager autograd's view).

    residual     bf16 block input and post-attention residual (inputs of the two RMSNorms)
    norm_stats   fp32 reciprocal RMS of the two block norms and of every q/k head's QK-norm
    matmul_in    bf16 norm outputs feeding c_q/c_k/c_v and c_fc (eager autocast casts the
                 attention input once per projection: three copies)
    qk_prenorm   bf16 q and k after rotary, input of QK-norm
    qkv          bf16 q, k, v as saved by flash attention
    attn_out     bf16 attention output (saved by SDPA) and its contiguous copy into c_proj
    attn_lse     fp32 logsumexp per query head
    mlp_hidden   bf16 ReLU² output (input of c_proj); unless fused_relu2, also the ReLU output (saved by
                 relu and square)

    fused_rope_norm (default: whenever the kernel can run it, as training does on CUDA): tinylab.kernels'
    rotary + QK-norm op saves only its input and recomputes the rotation and the RMS in backward, so
    the QK-norm's own saved tensors (qk_prenorm and the q/k part of norm_stats) are not held. Measured
    on an H100: 812 MiB less at ittybitty batch 48 (10,289 -> 9,477 MiB), these terms come to 830 MiB.

    fused_relu2 (default, as training does on CUDA wherever Triton is installed): ReLU² is in the MLP GEMMs'
    epilogues (tinylab.kernels.relu2_mlp), which save only relu(h)²; the backward takes relu(h) as its square
    root. Measured on an H100: 1,537 MiB less at ittybitty batch 48; the term comes to 1,536 MiB.
    """
    d, H, Hkv, hd = c.model_dim, c.n_head, c.n_kv_head, c.head_dim
    fused = c.fusable_rope_norm if fused_rope_norm is None else fused_rope_norm
    qk = 0 if fused else 1
    return dict(
        residual=2 * BF16 * d,
        norm_stats=FP32 * (2 + qk * (H + Hkv)),
        matmul_in=BF16 * d * ((1 if compile else 3) + 1),
        qk_prenorm=qk * BF16 * (H + Hkv) * hd,
        qkv=BF16 * (H + 2 * Hkv) * hd,
        attn_out=2 * BF16 * H * hd,
        attn_lse=FP32 * H,
        mlp_hidden=(1 if fused_relu2 else 2) * BF16 * c.mlp_dim,
    )


def vram_estimate(c: GPTConfig, device_batch_size: int, *, compile: bool = True, seq_len: int | None = None,
                  fused_rope_norm: bool | None = None, fused_relu2: bool = True, fp8_lm_head: bool = False
                  ) -> dict[str, int]:
    """Peak training memory on one GPU in bytes, by component, with their sum as 'total'.

    weights            fp32 parameters (a tied wte/lm_head counted once)
    weights_bf16       autocast's cached bf16 copies of the block matrices
    gradients          fp32, one per parameter
    optimizer_muon     fp32 momentum per block matrix
    optimizer_adamw    fp32 exp_avg + exp_avg_sq for wte and lm_head
    activations        depth × per-layer saved tensors (activation_bytes_per_token) + the
                       bf16 embedding output and the int64 idx/targets
    logits             the chunked loss head: final-norm input and output and d(loss)/dx (bf16),
                       bf16 copy + fp32 gradient of lm_head, one chunk of logits scratch
    logits_fp8         with fp8_lm_head (tinylab.loss' FP8 path, GPUs of compute capability 8.9+): x and
                       lm_head in e4m3, two layouts each, and one chunk's e5m2 gradient and its transpose
    cuda_context, allocator_reserve, compile_workspace: the named overhead constants
    """
    if not isinstance(device_batch_size, int) or device_batch_size < 0:
        raise ConfigError(f"device_batch_size must be an integer >= 0, got {device_batch_size!r}")
    T = c.sequence_len if seq_len is None else seq_len
    if T < 1:
        raise ConfigError(f"seq_len must be >= 1, got {T}")
    p = param_counts(c)
    N = device_batch_size * T  # tokens in one micro-batch
    d, V = c.model_dim, c.vocab_size
    per_layer = sum(activation_bytes_per_token(c, compile=compile, fused_rope_norm=fused_rope_norm,
                                               fused_relu2=fused_relu2).values())
    factor = ACTIVATION_FACTOR_COMPILED if compile else ACTIVATION_FACTOR_EAGER
    v = dict(
        weights=FP32 * p["total"],
        weights_bf16=BF16 * p["blocks"],
        gradients=FP32 * p["total"],
        optimizer_muon=FP32 * p["blocks"],
        optimizer_adamw=2 * FP32 * (p["wte"] + p["lm_head"]),
        activations=int(factor * c.depth * N * per_layer) + N * (BF16 * d + 2 * INT64),
        logits=N * 3 * BF16 * d + V * d * (BF16 + FP32)
        + min(N, LOSS_CHUNK_TOKENS) * V * LOSS_SCRATCH_BYTES if N else 0,
        logits_fp8=FP8_COPIES * (N + V) * d + min(N, LOSS_CHUNK_TOKENS) * V * FP8_SCRATCH_BYTES
        if N and fp8_lm_head else 0,
    )
    v["allocator_reserve"] = ALLOCATOR_RESERVE_BYTES
    v["cuda_context"] = CUDA_CONTEXT_BYTES
    v["compile_workspace"] = COMPILE_WORKSPACE_BYTES if compile else 0
    v["total"] = sum(v.values())
    return v


def max_device_batch(c: GPTConfig, gpu_mem_bytes: float, *, compile: bool = True, seq_len: int | None = None,
                     fused_rope_norm: bool | None = None, fused_relu2: bool = True, fp8_lm_head: bool = False,
                     limit: int = 1 << 16) -> int:
    """The largest device batch whose vram_estimate fits gpu_mem_bytes less FIT_HEADROOM_BYTES (0 if none).

    Binary search on the estimator itself, so it stays right whatever the terms become.
    """
    budget = gpu_mem_bytes - FIT_HEADROOM_BYTES
    options = dict(compile=compile, seq_len=seq_len, fused_rope_norm=fused_rope_norm, fused_relu2=fused_relu2,
                   fp8_lm_head=fp8_lm_head)
    fits = lambda b: vram_estimate(c, b, **options)["total"] <= budget  # noqa: E731
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return limit
    while hi - lo > 1:  # invariant: fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# The estimate's terms in four groups, for tables and stacked plots.
VRAM_GROUPS = {
    "weights + optimizer": ("weights", "weights_bf16", "gradients", "optimizer_muon", "optimizer_adamw"),
    "activations": ("activations",),
    "logits": ("logits", "logits_fp8"),
    "overhead": ("cuda_context", "allocator_reserve", "compile_workspace"),
}


def group_vram(v: dict[str, int]) -> dict[str, int]:
    """vram_estimate's terms summed into VRAM_GROUPS (the groups add up to v['total'])."""
    return {g: sum(v[k] for k in keys) for g, keys in VRAM_GROUPS.items()}


# Peaks measured on an H100, the estimator's calibration (docs/benchmarks.md): `python -m tinylab.bench vram`
# rows (peak reserved + CUDA context) of today's training step. (vram_h100.jsonl and vram_h100_fused.jsonl
# hold the earlier steps' peaks, before the fused ReLU² and the lm_head op: history, not calibration.)
CALIBRATION = (REPO / "docs" / "bench" / "vram_h100_relu2.jsonl",)


def calibration_points(files=CALIBRATION) -> list[dict]:
    """Each measured peak as dict(preset, batch, compile, fused_rope_norm, fused_relu2, measured), measured in
    bytes."""
    points = []
    for f in files:
        for line in Path(f).read_text().splitlines():
            r = json.loads(line)
            mib = r["measured_mib"] if "measured_mib" in r else r["peak_reserved_mib"] + r["context_mib"]
            points.append(dict(preset=r["preset"], batch=r["batch"], compile=r["compile"],
                               fused_rope_norm=r.get("rope_norm", "torch") != "torch",
                               fused_relu2=r.get("relu2", "torch") != "torch", measured=mib * MiB))
    return points
