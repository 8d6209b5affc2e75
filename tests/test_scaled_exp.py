"""Where tinylab.loss takes tinylab.scaled_exp's step (its kernels need an sm_90 GPU and quack: tests/gpu runs them;
its glue kernel is tested under Triton's interpreter in tests/test_kernels.py)."""
import sys

import pytest
import torch

from tinylab import loss, scaled_exp


def test_tile_width_is_the_first_that_divides_the_vocabulary():
    assert scaled_exp.tile_n(24_576) == 192
    assert scaled_exp.tile_n(32_768) == 128  # 192 does not divide 2^15; the ping-pong GEMM's widest is 208
    assert scaled_exp.tile_n(64 * 5) == 64
    assert scaled_exp.tile_n(16 * 7) == 16
    assert scaled_exp.tile_n(50_257) is None  # GPT-2's: no whole tiles, so the Triton loss kernel


def test_cpu_tensors_take_the_bf16_step_without_importing_quack():
    x, w = torch.randn(256, 64), torch.randn(24_576 // 64, 64)
    assert not scaled_exp.fits(x, w, 15.0, torch.bfloat16)
    step = loss._chunk_step(x, w, 128, "auto", torch.bfloat16, 15.0)
    assert isinstance(step, loss._Chunks)
    assert "quack" not in sys.modules and "cutlass" not in sys.modules


@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_every_kernel_name_gives_the_same_loss_on_the_cpu(kernel):
    """'triton' (the Triton loss kernel on CUDA, never scaled-exp) and 'torch' take the torch step on a CPU, as
    'auto' does there."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(70, 32, generator=g), torch.randn(300, 32, generator=g)
    t = torch.randint(0, 300, (70,), generator=g)
    want = loss.linear_cross_entropy(x, w, t, 15.0, chunk=32)
    assert torch.equal(loss.linear_cross_entropy(x, w, t, 15.0, chunk=32, kernel=kernel), want)


def test_the_triton_loss_impl_names_its_kernel():
    from tinylab.model import LOSS_IMPLS, LOSS_KERNELS
    assert LOSS_KERNELS["chunked-triton"] == "triton" and LOSS_KERNELS["chunked"] == "auto"
    assert set(LOSS_KERNELS) <= set(LOSS_IMPLS) and set(LOSS_KERNELS.values()) <= set(loss.KERNELS)
