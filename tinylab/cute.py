"""tinylab's GEMM epilogues for quack's sm_90 GEMMs (CuTe DSL), where an H100 runs them.

quack (Tri Dao's kernels, `pip install -e ".[hopper]"`) has ping-pong GEMMs for Hopper: two warpgroups take turns,
one's epilogue running while the other's tensor-core MMAs do, which Triton's tile language cannot express. Its
epilogues are plain Python functions over the fp32 accumulator. tinylab writes three:

  softcap_exp   the lm_head's logits GEMM of tinylab.scaled_exp: the soft-capped softmax numerators, not the logits;
  relu2         the MLP's first GEMM: relu(h)² (tinylab.kernels.relu2_mlp's forward);
  relu2_grad    the MLP's backward GEMM: dh = (dy·W_proj)·2·√a for a = relu(h)².

Nothing here imports quack until a GPU that runs it asks (its import takes seconds); its kernels compile on their first
call and quack caches them on disk. Elsewhere (an RTX 3090, a CPU, quack absent) tinylab keeps its Triton kernels.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from .devices import nvidia_capability


@functools.cache
def installed() -> bool:
    """quack and cutlass importable (looked up, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("quack", "cutlass"))


def runs_on(device: torch.device) -> bool:
    """An NVIDIA sm_90 GPU (quack's GEMMs here are Hopper's) with quack installed."""
    return nvidia_capability(device) == (9, 0) and installed()


@functools.cache
def softcap_exp():
    """GEMM with the epilogue, per accumulator element l (a raw logit): E = exp(z − c)·(1 − t²) with t = tanh(l/c),
    z = c·t, and exp(z − c) = 2^(k·t − k) for k = c·log2(e) (operands inv_c = 1/c and k); Σ exp(z − c) per row and
    column tile (the reduce `sum_exp`); l itself at each row's target (`target` in, `target_logit` out)."""
    from quack.activation import tanh  # tanh.approx.f32
    from quack.epilogue.frontend import gemm_epilogue
    from quack.epilogue.math import pexp2
    from quack.epilogue.ops import ColVecLoad, ColVecReduce, ColVecSelect

    target = ColVecLoad("target")

    @gemm_epilogue(reduces={"sum_exp": ColVecReduce("sum_exp")},
                   outs={"target_logit": ColVecSelect("target_logit", idx_op=target)}, extra_ops=(target,))
    def epilogue(acc, inv_c, k):
        t = tanh(acc * inv_c)
        e = pexp2(t * k - k)
        return {"D": e * (1.0 - t * t), "sum_exp": e, "target_logit": acc}

    return epilogue


@functools.cache
def _relu2_epilogues():
    import cutlass.cute as cute
    from quack.activation import relu_sq
    from quack.epilogue.frontend import gemm_epilogue
    from quack.gemm_config import GemmConfig

    @gemm_epilogue()
    def relu2(acc):
        return {"D": relu_sq(acc)}

    @gemm_epilogue()
    def relu2_grad(acc, c):  # c: the C operand, a = relu(h)²
        return {"D": acc * (2.0 * cute.math.sqrt(c, fastmath=True))}

    # The fastest measured for ittybitty's 98,304 × 512 × 2,048 on an H100 (docs/benchmarks.md §1, session 12):
    # forward 324 µs (tinylab's Triton TMA kernel: 338), backward 472 µs (523); both ping-pong
    tile = dict(pingpong=True, is_dynamic_persistent=False, device_capacity=9)
    return {1: (relu2, GemmConfig(tile_m=128, tile_n=128, cluster_m=1, cluster_n=2, **tile)),
            2: (relu2_grad, GemmConfig(tile_m=128, tile_n=160, cluster_m=2, cluster_n=1, **tile))}


def relu2_gemm(a: torch.Tensor, b: torch.Tensor, aux: torch.Tensor | None, epi: int) -> torch.Tensor:
    """tinylab.kernels._mm_epilogue's contract on quack: epilogue(a (M, K) · b (K, N)) as a new (M, N) tensor; epi 1:
    relu(·)², epi 2: ·2·√aux."""
    mod, config = _relu2_epilogues()[epi]
    return mod(a, b, aux, config=config, tuned=False)["D"]
