"""lm_head's FP8 path on a CUDA GPU: the compiled kernel softcap_cross_entropy_fp8, and
linear_cross_entropy(kernel="fp8") under bf16 autocast as training calls it (on a GPU without FP8,
below compute capability 8.9, it must give kernel="auto"'s result). The CPU suite checks the same
driver with the torch step (tests/test_fp8_loss.py) and the kernel under Triton's interpreter.
"""
import pytest
import torch
import torch.nn.functional as F

from tinylab import loss as loss_mod

SOFTCAP = 15.0


def test_fp8_kernel_matches_the_torch_step_bit_for_bit_nearly():
    """The kernel rounds to nearest-even as torch does, so g8 equals the torch step's e5m2 gradient except where
    the two fp32 gradients straddle a rounding boundary: there they differ by one e5m2 step (seen: 5 values of
    1.5 million)."""
    kernels = pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    if not loss_mod.fp8_supported("cuda"):
        pytest.skip("this GPU has no FP8 (compute capability < 8.9)")
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (8 * torch.randn(301, 5000, device="cuda", generator=g)).bfloat16()  # no tile fits exactly
    targets = torch.randint(0, 5000, (301,), device="cuda", generator=g)
    targets[::5] = -1
    # exact tanh, as torch's: with tanh.approx.f32 (the default) more values straddle a rounding boundary
    losses, g8, g8t = kernels.softcap_cross_entropy_fp8(logits, targets, SOFTCAP, loss_mod.FP8_GRAD_SCALE, approx=False)
    ref_loss, ref8, _ = loss_mod._chunk_loss_and_grad_fp8(logits, targets, SOFTCAP)
    torch.testing.assert_close(losses.sum(), ref_loss, rtol=1e-5, atol=1e-4)
    assert torch.equal(g8t.t().view(torch.uint8), g8.view(torch.uint8))
    got, want = g8.float(), ref8.float()
    differ = got != want
    assert differ.float().mean() < 1e-3, f"{int(differ.sum())} of {differ.numel()} values differ"
    assert ((got - want).abs()[differ] <= want.abs()[differ] * 0.25 + 2.0 ** -16).all()  # one step: 2**(e - 2)


def test_fp8_lm_head_under_autocast_is_within_fp8_error_of_fp32():
    """Training's call: x bf16 (requires grad), W fp32 under bf16 autocast, 8 chunks. Bounds as the CPU test's
    (tests/test_fp8_loss.py: loss ≤ 3.4e-3 relative, gradients ~4.2% relative norm over 50 seeds there)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2048, 256, device="cuda", generator=g).bfloat16()
    w = torch.randn(4096, 256, device="cuda", generator=g) * 0.1
    targets = torch.randint(0, 4096, (2048,), device="cuda", generator=g)
    targets[::7] = -1
    results = {}
    for kernel in ("fp8", "auto"):
        xk, wk = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_mod.linear_cross_entropy(xk, wk, targets, SOFTCAP, chunk=256, kernel=kernel)
        loss.backward()
        assert xk.grad.dtype == torch.bfloat16 and wk.grad.dtype == torch.float32
        results[kernel] = (loss.detach(), xk.grad, wk.grad)
    if not loss_mod.fp8_supported("cuda"):  # e.g. an RTX 3090: the bf16 path, exactly
        assert all(torch.equal(a, b) for a, b in zip(results["fp8"], results["auto"]))
        return
    xr, wr = x.float().requires_grad_(), w.clone().requires_grad_()
    ref = F.cross_entropy(SOFTCAP * torch.tanh(xr @ wr.t() / SOFTCAP), targets, ignore_index=-1)
    ref.backward()
    loss, gx, gw = results["fp8"]
    assert abs(loss - ref) / ref < 6e-3
    for a, b in ((gx, xr.grad), (gw, wr.grad)):
        assert (a.float() - b).norm() / b.norm() < 0.06
        assert F.cosine_similarity(a.float().flatten(), b.flatten(), dim=0) > 0.995
