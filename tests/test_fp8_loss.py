"""linear_cross_entropy(kernel="fp8") on the CPU: the FP8 driver of tinylab.loss with its torch step.

torch 2.11 and 2.13 have a CPU torch._scaled_mm, so the FP8 GEMMs and the driver's layouts run here;
the loss step is the torch version of tinylab.kernels.softcap_cross_entropy_fp8 (tests/test_kernels.py
runs the driver with the kernel itself, under Triton's interpreter). Against the fp32 loss and gradients
of materialised logits, the errors are FP8's own: e4m3 x and W (3 mantissa bits) and the e5m2 gradient
(2 bits, ~4% relative per value, unbiased). Where FP8 can't run, kernel="fp8" is kernel="auto" exactly.
"""
import pytest
import torch
import torch.nn.functional as F

from tinylab import loss as loss_mod

SOFTCAP = 15.0
N, V, D, CHUNK = 96, 208, 64, 32  # multiples of 16: the FP8 path runs, in three chunks

needs_cpu_fp8 = pytest.mark.skipif(not loss_mod.fp8_supported("cpu"),
                                   reason=f"torch {torch.__version__} has no CPU torch._scaled_mm")


def inputs(n=N, v=V, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.3  # logits of std ~2.4: a spread softmax, some near the softcap
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::5] = -1
    return x, w, targets


def lce(x, w, targets, kernel, chunk=CHUNK, autocast=False):
    """Loss, x.grad and w.grad of linear_cross_entropy (fresh leaves; bf16 autocast as in training if asked)."""
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_mod.linear_cross_entropy(x, w, targets, SOFTCAP, chunk=chunk, kernel=kernel)
    loss.backward()
    return loss.detach(), x.grad, w.grad


def reference(x, w, targets):
    """fp32 loss and gradients through materialised logits."""
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = F.cross_entropy(SOFTCAP * torch.tanh(x @ w.t() / SOFTCAP), targets, ignore_index=-1)
    loss.backward()
    return loss.detach(), x.grad, w.grad


def assert_near(got, want) -> dict:
    """got (loss, grad_x, grad_w) within FP8's error of want. Over 50 seeds of inputs() the fp8 driver measured
    loss relative error ≤ 3.4e-3 (median 1.0e-3), gradients' relative norm error 3.8 to 4.6% (4.2%) and cosine
    similarity ≥ 0.9990 for both; the bounds leave some margin."""
    err = {"loss": (abs(got[0] - want[0]) / want[0]).item()}
    for name, a, b in (("x", got[1], want[1]), ("w", got[2], want[2])):
        assert a.dtype == b.dtype and a.shape == b.shape
        err[f"grad_{name}"] = ((a.float() - b).norm() / b.norm()).item()
        err[f"cos_{name}"] = F.cosine_similarity(a.float().flatten(), b.flatten(), dim=0).item()
    assert err["loss"] < 6e-3, err
    assert err["grad_x"] < 0.06 and err["grad_w"] < 0.06, err
    assert err["cos_x"] > 0.995 and err["cos_w"] > 0.995, err
    return err


def spy(monkeypatch, owner, name) -> list:
    """owner.name, replaced by itself recording its arguments in the list returned."""
    calls, real = [], getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


@pytest.fixture
def scaled_mm_calls(monkeypatch):
    return spy(monkeypatch, torch, "_scaled_mm")


@pytest.fixture
def step_kernels(monkeypatch):
    """The kernel argument of each bf16-path step chosen (the fallback must choose kernel="auto"'s)."""
    calls = spy(monkeypatch, loss_mod, "_loss_and_grad_fn")
    return lambda: [kernel for device, kernel in calls]


@needs_cpu_fp8
@pytest.mark.parametrize("kernel, autocast", [("fp8", False), ("fp8", True), ("fp8-fast", False)])
def test_fp8_driver_is_within_fp8_error_of_fp32_reference(kernel, autocast, scaled_mm_calls):
    x, w, targets = inputs()
    got = lce(x, w, targets, kernel, autocast=autocast)
    assert len(scaled_mm_calls) == 3 * (N // CHUNK)  # logits, dx, dW per chunk: the FP8 path ran
    assert_near(got, reference(x, w, targets))
    assert not torch.equal(got[1], lce(x, w, targets, "auto", autocast=autocast)[1])  # not the bf16 path's


@needs_cpu_fp8
def test_fp8_check_catches_a_wrong_gradient_scale_or_transpose(monkeypatch):
    """assert_near fails when the step's e5m2 gradient is off by 2× (a g_scale that the GEMMs don't undo: the
    gradients come out halved) or when its transposed copy is g8 reshaped instead of transposed (dW's relative
    error is then ~1.4)."""
    x, w, targets = inputs()
    want = reference(x, w, targets)
    assert_near(lce(x, w, targets, "fp8"), want)
    step = loss_mod._chunk_loss_and_grad_fp8
    corruptions = {
        "scale": lambda loss, g8, g8t: (loss, *((t.float() / 2).to(t.dtype) for t in (g8, g8t))),
        "transpose": lambda loss, g8, g8t: (loss, g8, g8.reshape(g8t.shape)),
    }
    for name, corrupt in corruptions.items():
        monkeypatch.setattr(loss_mod, "_chunk_loss_and_grad_fp8", lambda *a, c=corrupt: c(*step(*a)))
        with pytest.raises(AssertionError):
            assert_near(lce(x, w, targets, "fp8"), want)


@pytest.mark.parametrize("n, v, d, chunk", [
    (90, V, D, CHUNK),  # N not a multiple of 16
    (N, 200, D, CHUNK),  # nor V
    (N, V, 72, CHUNK),  # nor d
    (N, V, D, 40),  # nor the chunk (the second chunk would start 40 bytes into x8t's rows)
])
def test_fp8_falls_back_to_the_bf16_path_where_shapes_dont_fit(n, v, d, chunk, scaled_mm_calls, step_kernels):
    x, w, targets = inputs(n, v, d)
    got = lce(x, w, targets, "fp8", chunk=chunk)
    assert not scaled_mm_calls and step_kernels() == ["auto"]  # the Triton kernel on CUDA, as kernel="auto"
    for a, b in zip(got, lce(x, w, targets, "auto", chunk=chunk)):
        assert torch.equal(a, b)


def test_fp8_falls_back_where_the_device_has_no_fp8(monkeypatch, scaled_mm_calls, step_kernels):
    """An RTX 3090 (compute capability 8.6): kernel="fp8" trains as kernel="auto". Shown on the CPU by making
    fp8_supported say no; its capability rule is tested below."""
    monkeypatch.setattr(loss_mod, "fp8_supported", lambda device: False)
    x, w, targets = inputs()
    for a, b in zip(lce(x, w, targets, "fp8"), lce(x, w, targets, "auto")):
        assert torch.equal(a, b)
    assert not scaled_mm_calls and step_kernels() == ["auto", "auto"]


@pytest.mark.parametrize("capability, ok", [((8, 6), False), ((8, 0), False), ((8, 9), True), ((9, 0), True),
                                            ((12, 0), True)])
def test_fp8_supported_needs_compute_capability_8_9(monkeypatch, capability, ok):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert loss_mod.fp8_supported("cuda") is ok
    assert loss_mod.fp8_supported(torch.device("cuda", 0)) is ok


@pytest.mark.parametrize("gpu", ["H100", "H100 (measured)", "H200", "RTX 4090", "A100", "RTX 3090"])
def test_a_named_gpu_and_the_device_itself_get_the_same_fp8_answer(monkeypatch, gpu):
    """The plan and the calculators ask by name (calc.gpu_has_fp8), the trainer asks the device (fp8_supported):
    one rule, calc.fp8_capable, decides both."""
    from tinylab import calc

    key = gpu.split(" (")[0]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: calc.GPU_CAPABILITY[key])
    assert calc.gpu_has_fp8(gpu) is loss_mod.fp8_supported("cuda") is (key in ("H100", "H200", "RTX 4090"))


def test_fp8_supported_on_cpu_and_mps():
    assert loss_mod.fp8_supported("cpu") is loss_mod._cpu_scaled_mm()
    assert loss_mod.fp8_supported("mps") is False


def test_evaluation_and_unknown_kernels():
    """Without gradients the kernel is not used (the losses are the bf16 path's); a misspelt kernel is refused."""
    x, w, targets = inputs()
    for reduction in ("none", "sum"):
        fp8 = loss_mod.linear_cross_entropy(x, w, targets, SOFTCAP, reduction, chunk=CHUNK, kernel="fp8")
        assert torch.equal(fp8, loss_mod.linear_cross_entropy(x, w, targets, SOFTCAP, reduction, chunk=CHUNK))
    with pytest.raises(ValueError, match="kernel must be one of"):
        loss_mod.linear_cross_entropy(x.requires_grad_(), w, targets, SOFTCAP, kernel="FP8")
