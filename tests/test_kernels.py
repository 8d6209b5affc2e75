"""tinylab.kernels' Triton kernels, run on CPU tensors by Triton's interpreter (TRITON_INTERPRET=1).

Triton reads TRITON_INTERPRET when a @triton.jit function is defined, i.e. when tinylab.kernels
is imported, so the kernel runs in a fresh Python subprocess started with the variable set; it
loads its inputs from, and saves its outputs to, files this process writes and then checks
against torch references. Skipped where Triton is not installed (the dev extra installs it on
Linux x86_64). Run under Triton 3.6 (torch 2.11's) and 3.9; see softcap_cross_entropy_ for
what the 3.6 interpreter needs.
"""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton not installed: the interpreter test of tinylab.kernels needs it")

from tinylab import loss as loss_mod  # noqa: E402
from tinylab.config import GPTConfig  # noqa: E402
from tinylab.model import GPT, apply_rotary_emb, norm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOFTCAP = 15.0

# Runs under TRITON_INTERPRET=1: the kernel on its own, then linear_cross_entropy with the
# Triton step that it picks on CUDA (linear_cross_entropy picks the torch step on CPU); the
# rotary + QK-norm op; the FP8 loss kernel, and linear_cross_entropy(kernel="fp8"), which
# picks that kernel under the interpreter; the MLP with ReLU² in its GEMMs, forward and backward; the scaled-exp
# step's glue kernel (tinylab.scaled_exp) on numerators made here as its GEMM's epilogue makes them.
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from tinylab import loss
    from tinylab.kernels import softcap_cross_entropy_

    inp = torch.load(sys.argv[1])
    logits = inp["logits"].clone()
    losses = softcap_cross_entropy_(logits, inp["targets"], inp["softcap"])

    from tinylab.kernels import softcap_cross_entropy
    kept = inp["logits"].clone()
    eval_losses = softcap_cross_entropy(kept, inp["targets"], inp["softcap"])
    eval_calls = []  # evaluation's op with the kernel as its step, as on CUDA
    loss._losses_fn = lambda *args: lambda *a: eval_calls.append(1) or loss._triton_losses(*a)
    with torch.no_grad():
        lce_none = loss.linear_cross_entropy(inp["x"], inp["w"], inp["lce_targets"], inp["softcap"], "none",
                                             chunk=inp["chunk"])

    loss._loss_and_grad_fn = lambda *args: loss._triton_loss_and_grad
    x = inp["x"].clone().requires_grad_()
    w = inp["w"].clone().requires_grad_()
    lce = loss.linear_cross_entropy(x, w, inp["lce_targets"], inp["softcap"], chunk=inp["chunk"])
    lce.backward()

    from tinylab.kernels import rope_rms_norm
    xr = inp["rope_x"].clone().requires_grad_()
    yr = rope_rms_norm(xr, inp["cos"], inp["sin"])
    (yr * inp["rope_dy"]).sum().backward()

    from tinylab.kernels import softcap_cross_entropy_fp8
    from tinylab.loss import FP8_GRAD_SCALE
    fp8 = {"default": softcap_cross_entropy_fp8(inp["logits"].bfloat16(), inp["targets"], inp["softcap"], FP8_GRAD_SCALE)}
    calls = []  # the driver's FP8 path with the kernel as its step, as on CUDA
    loss._triton_fp8_loss_and_grad = lambda *a, step=loss._triton_fp8_loss_and_grad: calls.append(1) or step(*a)
    x8 = inp["fp8_x"].clone().requires_grad_()
    w8 = inp["fp8_w"].clone().requires_grad_()
    lce8 = loss.linear_cross_entropy(x8, w8, inp["fp8_targets"], inp["softcap"], chunk=inp["fp8_chunk"], kernel="fp8")
    lce8.backward()
    from tinylab.kernels import relu2_mlp
    mlp = []
    for shapes in inp["mlp"]:
        xm, wf, wp = (t.clone().requires_grad_() for t in shapes[:3])
        y, a = relu2_mlp(xm, wf, wp)
        (y * shapes[3]).sum().backward()
        mlp.append((y.detach(), a, xm.grad, wf.grad, wp.grad))
    from tinylab.kernels import scaled_exp_glue
    g = inp["glue"]
    glue_e = g["e"].clone()
    glue = scaled_exp_glue(g["sum_exp"], g["target_logit"], g["targets"], glue_e, g["x"], inp["softcap"])
    torch.save({"glue": (*glue, glue_e), "losses": losses, "grad": logits, "eval_losses": eval_losses, "kept": kept, "lce_none": lce_none, "eval_calls": len(eval_calls), "lce": lce.detach(), "gx": x.grad, "gw": w.grad,
                "rope_y": yr.detach(), "rope_dx": xr.grad, "fp8": fp8, "mlp": mlp,
                "fp8_lce": (lce8.detach(), x8.grad, w8.grad, len(calls))}, sys.argv[2])
""")


def rotary_tables(seq_len: int, head_dim: int):
    with torch.device("meta"):
        model = GPT(GPTConfig(depth=1, model_dim=head_dim, head_dim=head_dim, vocab_size=300, sequence_len=seq_len))
    return model._rotary_tables(device="cpu")


def glue_inputs(g, n=21, vocab=384, tile=192, dim=40):
    """What tinylab.scaled_exp's GEMM hands the glue kernel, for raw logits l reaching 3c (the softcap saturates):
    e = exp(z − c)·(1 − t²) in bf16, Σ exp(z − c) per 192-column tile, l at each target; x in bf16."""
    logits = torch.randn(n, vocab, generator=g) * 3 * SOFTCAP
    t = torch.tanh(logits / SOFTCAP)
    e = torch.exp(SOFTCAP * t - SOFTCAP)
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[::5] = -1
    targets[1], targets[2] = 0, vocab - 1
    return {"logits": logits, "e": (e * (1 - t * t)).bfloat16(), "sum_exp": e.view(n, vocab // tile, tile).sum(-1),
            "target_logit": logits.gather(1, targets.clamp(min=0)[:, None])[:, 0], "targets": targets,
            "x": torch.randn(n, dim, generator=g).bfloat16()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Fresh random inputs (seed printed on failure), and the interpreted kernel's outputs for them."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    g = torch.Generator().manual_seed(seed)
    n, v = 37, 9000  # 9000 columns: one full 8192-wide block (kernels.CE_TILE) and one masked partial block;
    # 37 × 9000 fills no 128 × 128 tile of the FP8 kernel's transpose either
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::4] = -1  # ignored rows, including the first
    targets[1], targets[2] = 0, v - 1  # the first and last column as targets
    lce_targets = torch.randint(0, 300, (50,), generator=g)
    lce_targets[::3] = -1
    inp = {
        "logits": torch.randn(n, v, generator=g) * 5, "targets": targets, "softcap": SOFTCAP,
        "x": torch.randn(50, 32, generator=g), "w": torch.randn(300, 32, generator=g), "lce_targets": lce_targets,
        "chunk": 16,  # 50 tokens: three full chunks and a partial one
        # rotary + QK-norm: 2 × 70 × 3 rows (not a multiple of the 64-row block), head_dim 16, the model's tables
        "rope_x": torch.randn(2, 70, 3, 16, generator=g) * 3, "rope_dy": torch.randn(2, 70, 3, 16, generator=g),
        **dict(zip(("cos", "sin"), rotary_tables(70, 16))),
        # the FP8 driver: multiples of 16 (the FP8 path runs), three chunks
        "fp8_x": torch.randn(96, 64, generator=g), "fp8_w": torch.randn(208, 64, generator=g) * 0.3,
        "fp8_targets": torch.where(torch.rand(96, generator=g) < 0.2, -1, torch.randint(0, 208, (96,), generator=g)),
        "fp8_chunk": 32,
        # the MLP with ReLU² in the GEMMs: (x, W_fc, W_proj, dy), tiles of 32 × 32 × 16 under the interpreter: one
        # shape they divide, one they don't (every load and store masked)
        "mlp": [(torch.randn(n, d, generator=g), torch.randn(h, d, generator=g) * d ** -0.5,
                 torch.randn(d, h, generator=g) * h ** -0.5, torch.randn(n, d, generator=g))
                for n, d, h in ((64, 32, 64), (50, 24, 72))],
        "glue": glue_inputs(g),
    }
    d = tmp_path_factory.mktemp("kernels")
    torch.save(inp, d / "in.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(d / "in.pt"), str(d / "out.pt")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"interpreter subprocess failed (seed {seed}):\n{proc.stderr[-4000:]}"
    print(f"seed {seed}")
    return seed, inp, torch.load(d / "out.pt")


def test_softcap_cross_entropy_matches_torch_loss_and_autograd(run):
    seed, inp, out = run
    logits = inp["logits"].clone().requires_grad_()
    ref = F.cross_entropy(SOFTCAP * torch.tanh(logits / SOFTCAP), inp["targets"], reduction="none", ignore_index=-1)
    ref.sum().backward()
    ignored = inp["targets"] < 0
    assert out["losses"].dtype == torch.float32 and out["losses"].shape == ref.shape
    torch.testing.assert_close(out["losses"], ref.detach(), rtol=1e-5, atol=1e-5, msg=lambda m: f"seed {seed}: {m}")
    torch.testing.assert_close(out["grad"], logits.grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"seed {seed}: {m}")
    assert (out["losses"][ignored] == 0).all() and (out["grad"][ignored] == 0).all()
    assert (out["grad"][~ignored] != 0).any(dim=1).all()
    assert out["grad"].abs().max() > 0.1  # the targets' entries (-1 + p)·(1 - th²), not all ~0


def test_losses_only_kernel_and_evaluation_op_match_torch(run):
    """Evaluation's path: softcap_cross_entropy (one read, logits left as they are) and linear_cross_entropy's
    no-grad op with that kernel as its step, against torch's cross-entropy over full logits."""
    seed, inp, out = run
    msg = lambda m: f"seed {seed}: {m}"  # noqa: E731
    ref = F.cross_entropy(SOFTCAP * torch.tanh(inp["logits"] / SOFTCAP), inp["targets"], reduction="none",
                          ignore_index=-1)
    torch.testing.assert_close(out["eval_losses"], ref, rtol=1e-5, atol=1e-5, msg=msg)
    assert torch.equal(out["kept"], inp["logits"])  # no gradient written
    x, w, t = inp["x"], inp["w"], inp["lce_targets"]
    ref = F.cross_entropy(SOFTCAP * torch.tanh(x @ w.t() / SOFTCAP), t, reduction="none", ignore_index=-1)
    torch.testing.assert_close(out["lce_none"], ref, rtol=1e-5, atol=1e-5, msg=msg)
    assert (out["lce_none"][t < 0] == 0).all() and out["lce_none"].shape == t.shape
    assert out["eval_calls"] == math.ceil(len(t) / inp["chunk"])  # the kernel ran on every chunk


def test_evaluation_step_is_the_kernel_on_cuda_unless_torch_or_fp64():
    """Which step evaluation's op picks (selection only; nothing runs on a GPU here)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert loss_mod._losses_fn(cuda, torch.bfloat16, "auto") is loss_mod._triton_losses
    assert loss_mod._losses_fn(cuda, torch.float32, "fp8") is loss_mod._triton_losses  # evaluation: never FP8
    for device, dtype, kernel in ((cuda, torch.bfloat16, "torch"), (cuda, torch.float64, "auto"),
                                  (cpu, torch.float32, "auto")):
        assert loss_mod._losses_fn(device, dtype, kernel) is not loss_mod._triton_losses, (device, dtype, kernel)


def test_linear_cross_entropy_triton_step_matches_torch_step(run, monkeypatch):
    seed, inp, out = run
    x = inp["x"].clone().requires_grad_()
    w = inp["w"].clone().requires_grad_()
    triton_calls = []
    monkeypatch.setattr(loss_mod, "_triton_loss_and_grad", lambda *args: triton_calls.append(args))
    lce = loss_mod.linear_cross_entropy(x, w, inp["lce_targets"], SOFTCAP, chunk=inp["chunk"])
    lce.backward()
    assert not triton_calls  # CPU tensors take the plain torch step: this compares the two steps
    msg = lambda m: f"seed {seed}: {m}"  # noqa: E731
    torch.testing.assert_close(out["lce"], lce.detach(), rtol=1e-5, atol=1e-6, msg=msg)
    torch.testing.assert_close(out["gx"], x.grad, rtol=1e-5, atol=1e-6, msg=msg)
    torch.testing.assert_close(out["gw"], w.grad, rtol=1e-5, atol=1e-6, msg=msg)
    # and the torch step itself against autograd through full logits
    x2, w2 = inp["x"].clone().requires_grad_(), inp["w"].clone().requires_grad_()
    ref = F.cross_entropy(SOFTCAP * torch.tanh(x2 @ w2.t() / SOFTCAP), inp["lce_targets"], ignore_index=-1)
    ref.backward()
    torch.testing.assert_close(lce.detach(), ref.detach(), rtol=1e-5, atol=1e-6, msg=msg)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6, msg=msg)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-5, atol=1e-6, msg=msg)


def test_fused_rotary_qk_norm_matches_torch_forward_and_backward(run):
    """tinylab.kernels.rope_rms_norm (the model's fused path on CUDA) against norm(rotary(x)) in fp32 autograd."""
    seed, inp, out = run
    x = inp["rope_x"].clone().requires_grad_()
    ref = norm(apply_rotary_emb(x, inp["cos"], inp["sin"]))
    (ref * inp["rope_dy"]).sum().backward()
    msg = lambda m: f"seed {seed}: {m}"  # noqa: E731
    torch.testing.assert_close(out["rope_y"], ref.detach(), rtol=1e-5, atol=1e-5, msg=msg)
    torch.testing.assert_close(out["rope_dx"], x.grad, rtol=1e-5, atol=1e-5, msg=msg)
    assert out["rope_y"].is_contiguous() and out["rope_dx"].abs().max() > 0


# ----------------------------------------------------------------------------- the FP8 kernel
FP8_GRAD_SCALE = loss_mod.FP8_GRAD_SCALE


def e5m2_step(x: torch.Tensor) -> torch.Tensor:
    """The spacing of e5m2 values around each |x|: 2 mantissa bits, so 2**(exponent - 2); 2**-16 (the spacing
    of its subnormals) at least."""
    exponent = torch.floor(torch.log2(x.abs().clamp(min=2.0 ** -14)))
    return torch.exp2(exponent - 2)


def assert_fp8_grad(g8: torch.Tensor, g8t: torch.Tensor, ref: torch.Tensor, g_scale: float = FP8_GRAD_SCALE):
    """g8 (N, V) and g8t (V, N), e5m2, hold ref·g_scale within one e5m2 step, and are each other's transpose."""
    assert g8.dtype == g8t.dtype == torch.float8_e5m2 and g8.shape == ref.shape and g8t.shape == ref.t().shape
    assert g8.is_contiguous() and g8t.is_contiguous()
    assert torch.equal(g8t.t().view(torch.uint8), g8.view(torch.uint8)), "g8t is not g8 transposed"
    want = ref * g_scale
    err = (g8.float() - want).abs()
    bad = err > e5m2_step(want)
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} values off by more than one e5m2 step, "
                           f"e.g. {g8.float()[bad][:3].tolist()} for {want[bad][:3].tolist()}")


def test_softcap_cross_entropy_fp8_matches_torch_within_one_e5m2_step(run):
    """Losses as the bf16 kernel's; g8 and g8t (times FP8_GRAD_SCALE) within one e5m2 rounding step of autograd,
    for tiles that cover the logits partly (masked rows and columns), with ignored targets."""
    seed, inp, out = run
    logits = inp["logits"].bfloat16().float().requires_grad_()
    ref = F.cross_entropy(SOFTCAP * torch.tanh(logits / SOFTCAP), inp["targets"], reduction="none", ignore_index=-1)
    ref.sum().backward()
    ignored = inp["targets"] < 0
    for name, (losses, g8, g8t) in out["fp8"].items():
        msg = lambda m: f"seed {seed}, {name}: {m}"  # noqa: E731
        torch.testing.assert_close(losses, ref.detach(), rtol=1e-5, atol=1e-5, msg=msg)
        try:
            assert_fp8_grad(g8, g8t, logits.grad)
        except AssertionError as e:
            raise AssertionError(msg(e)) from None
        assert (losses[ignored] == 0).all() and (g8.float()[ignored] == 0).all()
        assert (g8.float()[~ignored] != 0).any(dim=1).all()
        assert g8.float().abs().max() > 0.1 * FP8_GRAD_SCALE  # the targets' entries, not all ~0


def test_fp8_check_catches_a_wrong_scale_or_transpose(run):
    """assert_fp8_grad (above) fails for a g8 scaled by half, and for a g8t that is g8 reshaped, not transposed."""
    seed, inp, out = run
    logits = inp["logits"].bfloat16().float().requires_grad_()
    F.cross_entropy(SOFTCAP * torch.tanh(logits / SOFTCAP), inp["targets"], ignore_index=-1,
                    reduction="sum").backward()
    _, g8, g8t = out["fp8"]["default"]
    assert_fp8_grad(g8, g8t, logits.grad)  # as is: passes
    with pytest.raises(AssertionError, match="one e5m2 step"):
        assert_fp8_grad(g8, g8t, logits.grad, g_scale=FP8_GRAD_SCALE / 2)
    half = (g8.float() / 2).to(torch.float8_e5m2)
    with pytest.raises(AssertionError, match="one e5m2 step"):
        assert_fp8_grad(half, half.t().contiguous(), logits.grad)
    with pytest.raises(AssertionError, match="not g8 transposed"):
        assert_fp8_grad(g8, g8.reshape(g8t.shape), logits.grad)


def test_fp8_driver_with_the_triton_kernel_matches_the_torch_step(run):
    """linear_cross_entropy(kernel="fp8") with the interpreted kernel as its step (as on CUDA) against the same
    call on CPU with the torch step: the FP8 GEMMs are the same, so only the steps' fp32 rounding differs."""
    seed, inp, out = run
    lce, gx, gw, calls = out["fp8_lce"]
    assert calls == 3  # 96 tokens in chunks of 32, all through the kernel
    x = inp["fp8_x"].clone().requires_grad_()
    w = inp["fp8_w"].clone().requires_grad_()
    ref = loss_mod.linear_cross_entropy(x, w, inp["fp8_targets"], SOFTCAP, chunk=inp["fp8_chunk"], kernel="fp8")
    ref.backward()
    msg = lambda m: f"seed {seed}: {m}"  # noqa: E731
    torch.testing.assert_close(lce, ref.detach(), rtol=1e-5, atol=1e-6, msg=msg)
    # Mostly bit for bit; but a gradient value on an e5m2 rounding boundary can round either way in the two
    # steps, moving the entries of dx and dW it feeds by up to 5% (seen once in 20 seeds) and their whole
    # by ~3e-5 (relative norm). A g8t that is g8 reshaped, not transposed, moves dW by ~1.4 (test_fp8_loss.py).
    for got, want in ((gx, x.grad), (gw, w.grad)):
        rel = ((got - want).norm() / want.norm()).item()
        assert rel <= 1e-3, msg(f"relative difference {rel:.2e}")


def test_relu2_mlp_in_gemm_epilogues_matches_autograd(run):
    """tinylab.kernels.relu2_mlp (the model's MLP on CUDA in bf16): y, the saved activation and all three gradients
    against fp64 autograd through c_proj(relu(c_fc(x))²), the backward's 2·relu(h) taken as 2·√a."""
    seed, inp, out = run
    for (x, w_fc, w_proj, dy), (y, a, gx, gfc, gproj) in zip(inp["mlp"], out["mlp"]):
        x, w_fc, w_proj = (t.double().requires_grad_() for t in (x, w_fc, w_proj))
        act = torch.relu(x @ w_fc.t()).square()
        ref = act @ w_proj.t()
        (ref * dy.double()).sum().backward()
        msg = lambda m: f"seed {seed}, x {tuple(x.shape)}: {m}"  # noqa: E731
        for got, want in ((y, ref), (a, act), (gx, x.grad), (gfc, w_fc.grad), (gproj, w_proj.grad)):
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5, msg=msg)
        assert (a == 0).float().mean() > 0.2 and gfc.abs().max() > 0  # ReLU cut some, and gradients flowed


def test_scaled_exp_glue_gives_the_loss_and_the_logits_gradient(run):
    """tinylab.scaled_exp's glue: per-row losses, and v·E (E's target entries fixed in place) equal to the gradient
    of the soft-capped cross-entropy; xs = bf16(v)·x; ignored rows contribute nothing."""
    seed, inp, out = run
    msg = lambda m: f"seed {seed}: {m}"  # noqa: E731
    g = inp["glue"]
    losses, v, xs, e = out["glue"]
    logits = g["logits"].clone().requires_grad_()
    ref = F.cross_entropy(SOFTCAP * torch.tanh(logits / SOFTCAP), g["targets"], reduction="none", ignore_index=-1)
    ref.sum().backward()
    torch.testing.assert_close(losses, ref.detach(), rtol=1e-5, atol=1e-5, msg=msg)
    # E is bf16: 2**-8 relative where torch rounded it, 2**-7 for the target entries the interpreter truncated;
    # 1e-6 absolute for the saturated entries, where 1 − t² cancels in fp32 on both sides (as the kernel tests above)
    torch.testing.assert_close(v[:, None] * e.float(), logits.grad, rtol=2 ** -6, atol=1e-6, msg=msg)
    rows = torch.arange(len(v))[g["targets"] >= 0]
    cols = g["targets"][rows]
    assert (e[rows, cols] != g["e"][rows, cols]).all() and (e[rows, cols] <= 0).all()  # fixed in place: p − 1 ≤ 0
    ignored = g["targets"] < 0
    assert (losses[ignored] == 0).all() and (v[ignored] == 0).all() and (xs[ignored] == 0).all()
    want = v.bfloat16().float()[:, None] * g["x"].float()  # two bf16 roundings (v, then v·x): 2**-6 truncated
    torch.testing.assert_close(xs.float(), want, rtol=2 ** -6, atol=0, msg=msg)
