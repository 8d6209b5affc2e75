"""What only a CUDA GPU shows: the compiled Triton loss kernel, a bf16 + torch.compile training
step, resume on CUDA (within a tolerance, and bitwise in deterministic mode), cached decoding,
and the VRAM estimate against the measured peak. Run with `make test-gpu` (`pytest -m gpu`).

The CPU suite checks exact values in fp32; here each comparison has a tolerance, and the
comment next to it says where that number comes from. The tests use the package's smallest
surface (build_model, GPTConfig, model(x, y), setup_optimizers, generate, train, vram_estimate,
softcap_cross_entropy_) and do their own training steps, so they outlive refactors of the loop.
"""
import gc
import json
import os
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tinylab.calc import vram_estimate  # the one import to change if the estimator moves
from tinylab.config import GPTConfig
from tinylab.engine import generate
from tinylab.model import build_model, compile_model
from tinylab.optim import setup_optimizers
from tinylab.train import train

SOFTCAP = 15.0  # tinylab.model.LOGIT_SOFTCAP
BF16 = dict(device_type="cuda", dtype=torch.bfloat16)
# A small model whose vocabulary is not a multiple of the loss kernel's 8192-wide block (kernels.CE_TILE).
SMALL = GPTConfig(depth=2, model_dim=128, head_dim=64, vocab_size=5000, sequence_len=256)


def random_weights(model, seed: int = 0):
    """Every weight N(0, 1/fan_in), drawn on the CPU, so two models on two devices get the same values.

    init_weights zeroes the output projections and shrinks lm_head, so at init the blocks add
    nothing and the logits are near 0: a comparison there would not see attention or the MLP.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
    return model


def train_step(net, model, optimizers, batches, autocast) -> float:
    """One optimizer step as tinylab.train takes it: forward under autocast and backward per micro-batch
    (gradients accumulate), then every optimizer steps and the gradients are dropped. Mean loss."""
    total = 0.0
    for x, y in batches:
        with autocast:
            loss = net(x, y)
        (loss / len(batches)).backward()
        total += loss.item() / len(batches)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return total


# ----------------------------------------------------------------------------- the Triton kernel

@pytest.mark.parametrize("approx", [False, True])  # exp and a division; one tanh.approx.f32 (the default on NVIDIA)
@pytest.mark.parametrize("n_cols", [1000, 9000, 30000])  # under one 8192-wide block; 1 + partial; 3 + partial
def test_triton_loss_kernel_matches_torch_fp32_on_bf16_logits(n_cols, approx):
    kernels = pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    g = torch.Generator(device="cuda").manual_seed(n_cols)
    logits = (8 * torch.randn(301, n_cols, device="cuda", generator=g)).bfloat16()  # past the softcap's knee
    targets = torch.randint(0, n_cols, (301,), device="cuda", generator=g)
    targets[::5] = -1  # ignored rows, the first among them
    targets[1], targets[2] = 0, n_cols - 1
    x = logits.float().requires_grad_()  # the reference: torch in fp32 on the same (bf16) values
    ref = F.cross_entropy(SOFTCAP * torch.tanh(x / SOFTCAP), targets, reduction="none", ignore_index=-1)
    ref.sum().backward()

    grad = logits.clone()
    losses = kernels.softcap_cross_entropy_(grad, targets, SOFTCAP, approx)  # grad: d(sum)/d(logits)
    if approx:
        # tanh.approx.f32 (relative error under 2^-10.9) moves each z = 15·tanh(l/15) by a few 1e-5 and the
        # losses with it: at most 9.2e-5 measured here, 8.5e-5 over a 8,192 × 24,576 chunk (bench.lm_head).
        # 1e-3 keeps a 10× margin and still fails a wrong formula by orders of magnitude.
        torch.testing.assert_close(losses, ref.detach(), rtol=0, atol=1e-3)
        torch.testing.assert_close(grad.float(), x.grad, rtol=2 ** -6, atol=1e-5)
    else:
        # Losses: both fp32 from the same inputs; they differ only by summation order over n_cols terms and
        # the GPU's approximate exp/log (a few ulp): ~1e-6 relative, so 1e-5 (about 1e-4 absolute at loss ~10).
        torch.testing.assert_close(losses, ref.detach(), rtol=1e-5, atol=1e-5)
        # Gradient: written in bf16 over the logits. The GPU rounds to nearest (within half a bf16 ulp,
        # <= 2^-8 relative); 2^-7 is a whole ulp, which also covers a rounding that the fp32 differences
        # above tipped over (Triton's CPU interpreter truncates instead: 0.0078 at most on these inputs).
        torch.testing.assert_close(grad.float(), x.grad, rtol=2 ** -7, atol=1e-6)
    ignored = targets < 0
    assert (losses[ignored] == 0).all() and (grad[ignored] == 0).all()
    rows = torch.arange(301, device="cuda")[~ignored]
    assert (grad[rows, targets[~ignored]] < 0).all()  # p - 1 at the target
    # evaluation's losses-only launch of the same kernel: the same losses, the logits left as they are
    kept = logits.clone()
    torch.testing.assert_close(kernels.softcap_cross_entropy(kept, targets, SOFTCAP, approx), losses, rtol=1e-6, atol=1e-6)
    assert torch.equal(kept, logits)


def cute_runs() -> bool:
    from tinylab import cute
    return torch.cuda.is_available() and cute.runs_on(torch.device("cuda"))


@pytest.mark.skipif(not cute_runs(), reason="tinylab.scaled_exp runs on an sm_90 GPU with quack installed")
@pytest.mark.parametrize("rows", [4352, 4196], ids=["whole 128-row tiles", "a ragged last chunk"])
def test_scaled_exp_step_matches_fp32_as_closely_as_the_triton_step(rows, monkeypatch):
    """linear_cross_entropy's training op with kernel 'auto' on sm_90 (tinylab.scaled_exp: the logits never stored)
    against fp32 chunks: the summed loss, d/dx and d/dW; its errors next to the Triton step's. A last chunk of
    other than a multiple of 128 rows takes the Triton step."""
    from tinylab import loss, scaled_exp
    from tinylab.bench.lm_head import reference
    calls = []
    monkeypatch.setattr(scaled_exp.ScaledExpChunks, "__call__",
                        lambda self, s, e, *a, f=scaled_exp.ScaledExpChunks.__call__: calls.append(min(e, rows) - s)
                        or f(self, s, e, *a))
    g = torch.Generator(device="cuda").manual_seed(rows)
    vocab, dim, chunk = 4992, 256, 2048  # 26 column tiles of 192; chunks of 2048, 2048 and 256 or 100 rows
    x = torch.randn(rows, dim, device="cuda", generator=g).bfloat16()
    w = (torch.randn(vocab, dim, device="cuda", generator=g) * 0.8).bfloat16()  # logits ~ N(0, 13²): past the knee
    targets = torch.randint(0, vocab, (rows,), device="cuda", generator=g)
    targets[::7] = -1
    n = (targets >= 0).sum()
    ref_loss, ref_gx, ref_gw = reference(x, w, targets, chunk)  # means over the kept targets, fp32
    err = {}
    for kernel in ("auto", "triton"):
        total, gx, gw = loss._loss_and_grads(x, w, targets, SOFTCAP, chunk, kernel, torch.bfloat16)
        rel = lambda got, want: ((got.float() / n - want).norm() / want.norm()).item()  # noqa: E731
        err[kernel] = (abs((total / n).item() / ref_loss.item() - 1), rel(gx, ref_gx), rel(gw, ref_gw))
    assert calls == [2048, 2048, rows - 4096]  # the step ran every chunk (and passed the ragged one on)
    # loss: both read fp32 accumulators through tanh.approx.f32 (~1e-5 relative); gradients: bf16 E (or logits'
    # gradient), and for scaled-exp two more roundings each (dx scaled by v after the bf16 GEMM, xs = bf16(v)·x):
    # measured on an H100 at ittybitty's shapes 4.0e-3 / 2.9e-3 against the Triton step's 3.6e-3 / 1.0e-3
    assert err["auto"][0] < 1e-4
    assert err["auto"][1] < 2 * err["triton"][1] + 1e-3 and err["auto"][2] < 3 * err["triton"][2] + 2e-3, err


@pytest.mark.parametrize("head_dim", [64, 128])
def test_fused_rotary_qk_norm_matches_torch_fp32_on_bf16(head_dim):
    """tinylab.kernels.rope_rms_norm, the model's rotary + QK-norm on CUDA, forward and backward, against
    norm(apply_rotary_emb(x)) in fp32 autograd on the same bf16 values (a head count and length that do
    not fill the 64-row blocks evenly)."""
    kernels = pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    from tinylab.model import GPT, apply_rotary_emb, norm

    with torch.device("meta"):
        model = GPT(GPTConfig(depth=1, model_dim=3 * head_dim, head_dim=head_dim, vocab_size=300, sequence_len=333))
    cos, sin = model._rotary_tables(device="cuda")
    g = torch.Generator(device="cuda").manual_seed(head_dim)
    x = (3 * torch.randn(2, 333, 3, head_dim, device="cuda", generator=g)).bfloat16()
    dy = torch.randn(x.shape, device="cuda", generator=g).bfloat16()
    xf = x.float().requires_grad_()
    ref = norm(apply_rotary_emb(xf, cos, sin))
    (ref * dy.float()).sum().backward()
    xb = x.clone().requires_grad_()
    y = kernels.rope_rms_norm(xb, cos, sin)
    y.backward(dy)
    # y and dx are computed in fp32 and rounded once to bf16 (2^-9 relative), so 2^-7 allows a full ulp
    # either way plus the GPU's rsqrt; a wrong rotation sign or a missing rstd term is off by O(1).
    torch.testing.assert_close(y.float(), ref.detach(), rtol=2 ** -7, atol=2 ** -7)
    torch.testing.assert_close(xb.grad.float(), xf.grad, rtol=2 ** -7, atol=2 ** -6)


@pytest.mark.parametrize("tma", [True, False, None], ids=["triton-tma", "triton-pointers", "default"])
def test_relu2_gemm_epilogues_match_torch_fp32_on_bf16(tma):
    """tinylab.kernels' GEMMs with ReLU² in their epilogues (the sm_90 TMA kernel, the pointer-based one an RTX 3090
    runs, and the default: quack's ping-pong GEMM where tinylab.cute runs), forward relu(x·W_fcᵀ)² and backward
    (dy·W_proj)·2√a, against fp32 torch on the same bf16 values, at a shape no tile divides (1000 rows, 96 → 384)."""
    kernels = pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    if tma and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the TMA kernel is for sm_90")
    g = torch.Generator(device="cuda").manual_seed(0)
    x, dy = (torch.randn(1000, 96, device="cuda", generator=g).bfloat16() for _ in range(2))
    w_fc = (torch.randn(384, 96, device="cuda", generator=g) * 96 ** -0.5).bfloat16()
    w_proj = (torch.randn(96, 384, device="cuda", generator=g) * 384 ** -0.5).bfloat16()
    a_ref = torch.relu(x.float() @ w_fc.float().t()).square()
    a = kernels._mm_epilogue(x, w_fc.t(), None, epi=1, tma=tma)
    dh = kernels._mm_epilogue(dy, w_proj, a, epi=2, tma=tma)
    dh_ref = (dy.float() @ w_proj.float()) * 2 * a.float().sqrt()
    # one bf16 rounding of an fp32 result: 2^-9 relative; 2^-7 allows for TF32-free fp32 accumulation order
    torch.testing.assert_close(a.float(), a_ref, rtol=2 ** -7, atol=1e-3)
    torch.testing.assert_close(dh.float(), dh_ref, rtol=2 ** -7, atol=1e-3)
    assert (a == 0).float().mean() > 0.3 and dh.abs().max() > 0.1


def test_relu2_mlp_gradients_match_fp32_autograd():
    """The op the model's MLP calls on CUDA: y and the three gradients against fp32 autograd through
    c_proj(relu(c_fc(x))²), within bf16's rounding (relative norm error)."""
    kernels = pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    g = torch.Generator(device="cuda").manual_seed(1)
    x, w_fc, w_proj = (torch.randn(*s, device="cuda", generator=g) * k for s, k in (
        ((512, 128), 1.0), ((512, 128), 128 ** -0.5), ((128, 512), 512 ** -0.5)))
    dy = torch.randn(512, 128, device="cuda", generator=g)
    ref = [t.clone().requires_grad_() for t in (x, w_fc, w_proj)]
    (torch.relu(ref[0] @ ref[1].t()).square() @ ref[2].t() * dy).sum().backward()
    got = [t.bfloat16().requires_grad_() for t in (x, w_fc, w_proj)]
    y, _ = kernels.relu2_mlp(*got)
    (y.float() * dy).sum().backward()
    y_ref = torch.relu(x @ w_fc.t()).square() @ w_proj.t()
    rel = lambda a, b: ((a.float() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(y, y_ref) < 1e-2
    for mine, theirs in zip(got, ref):
        assert rel(mine.grad, theirs.grad) < 1e-2


# ----------------------------------------------------------------------------- bf16 + compile step

@pytest.mark.parametrize("regions", [True, False], ids=["by-region", "whole-model"])
def test_compiled_bf16_step_matches_the_fp32_eager_step(regions):
    """The step tinylab.train takes on CUDA (torch.compile by region or of the whole model, bf16 autocast with a
    bf16 residual, the Triton loss, fused AdamW, Muon's bf16 Newton-Schulz) against fp32 eager on the CPU, from
    the same weights and batch: the loss, and every parameter's update."""
    torch._dynamo.reset()
    ref, gpu = random_weights(build_model(SMALL, "cpu")), random_weights(build_model(SMALL, "cuda"))
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, SMALL.vocab_size, (2, 4, SMALL.sequence_len + 1), generator=g)  # 2 micro-batches

    def batches(device):
        return [(t[:, :-1].to(device), t[:, 1:].to(device)) for t in tokens]

    loss_ref = train_step(ref, ref, setup_optimizers(ref), batches("cpu"), nullcontext())
    loss_gpu = train_step(compile_model(gpu, regions), gpu, setup_optimizers(gpu), batches("cuda"),
                          torch.autocast(**BF16))
    # bf16 rounds each cast by up to 2^-9 relative, but the loss averages 2048 tokens' errors: a CPU
    # emulation of these casts (bf16 autocast and Newton-Schulz) moved it by 1e-5..2.3e-5 over 6 seeds.
    # 1e-3 leaves 40x for the GPU's other kernels; a wrong forward pass moves a loss of ~9 far more.
    assert loss_gpu == pytest.approx(loss_ref, rel=1e-3)
    for name, p in gpu.named_parameters():
        d_gpu = p.detach().cpu() - before[name]
        d_ref = ref.get_parameter(name).detach() - before[name]
        # AdamW's first update is ~lr·sign(grad), so a gradient entry near 0 may flip sign under bf16
        # noise and move by 2·lr; Muon's is the output of a bf16 Newton-Schulz iteration. The CPU
        # emulation above gave cosines >= 0.9942 (wte, the sign flips) and norm ratios within 0.7 %
        # over 6 seeds: 0.98 and 5 % leave 3x and 7x. A wrong gradient or lr lands far outside.
        cos = F.cosine_similarity(d_gpu.flatten(), d_ref.flatten(), dim=0).item()
        ratio = (d_gpu.norm() / d_ref.norm()).item()
        assert cos > 0.98 and abs(ratio - 1) < 0.05, f"{name}: cosine {cos:.4f}, norm ratio {ratio:.4f}"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager, as tinylab.train evaluates", "compiled"])
def test_evaluation_matches_the_fp32_eager_losses(compiled):
    """Evaluation on CUDA (bf16 autocast, no grad: the per-token losses from the losses-only kernel inside its opaque
    op), eager as tinylab.train runs it or compiled, against fp32 eager on the CPU, from the same weights and batch."""
    torch._dynamo.reset()
    ref, gpu = random_weights(build_model(SMALL, "cpu")), random_weights(build_model(SMALL, "cuda"))
    tokens = torch.randint(0, SMALL.vocab_size, (4, SMALL.sequence_len + 1), generator=torch.Generator().manual_seed(2))
    x, y = tokens[:, :-1], tokens[:, 1:].clone()
    y[0, :10] = -1  # ignored targets
    with torch.no_grad():
        want = ref(x, y, loss_reduction="none")
        with torch.autocast(**BF16):
            got = (compile_model(gpu) if compiled else gpu)(x.cuda(), y.cuda(), loss_reduction="none").cpu()
    assert got.dtype == torch.float32 and got.shape == want.shape and (got[:10] == 0).all()
    # bf16 activations and weights move each token's loss (~9) by a few 1e-2 at most; their mean over 1,014 tokens
    # averages that out as the training step's loss does (1e-3 there). A wrong kernel or target is off by ~1.
    err = (got - want).abs().max().item()
    assert err < 0.15, f"largest per-token difference {err:.3f}"
    assert got.mean().item() == pytest.approx(want.mean().item(), rel=1e-3)


def test_precompile_kernels_leaves_nothing_for_the_warm_up_and_the_evaluation_to_compile():
    """precompile_kernels' single sequence compiles every variant of tinylab's own Triton kernels that the warm-up's
    batch and an evaluation batch launch (they are in the same signature class), so neither compiles one."""
    from tinylab import kernels
    from tinylab.evaluate import evaluate_bpb
    from tinylab.presets import resolve
    from tinylab.train import precompile_kernels, warm_up

    jits = [kernels._softcap_ce_kernel, kernels._rope_rmsnorm_fwd_kernel, kernels._rope_rmsnorm_bwd_kernel,
            kernels._mm_epilogue_tma_kernel, kernels._mm_epilogue_kernel, kernels._scaled_exp_glue_kernel]

    def variants() -> int:  # Triton's in-process JIT caches, one dict of compiled kernels per device
        return sum(len(cache[0]) for jit in jits for cache in jit.device_caches.values())

    torch._dynamo.reset()
    for jit in jits:
        jit.device_caches.clear()  # compiled by earlier tests: forget them (Triton's disk cache makes this cheap)
    cfg = resolve("smoke", dict(depth=2, model_dim=128, head_dim=64, sequence_len=256, device_batch_size=6))
    device, autocast = torch.device("cuda"), torch.autocast(**BF16)
    model = build_model(cfg.model, device=device, loss="chunked")
    precompile_kernels(model, cfg, device)
    ahead = variants()
    warm_up(compile_model(model), model, cfg, device, autocast)
    buf = torch.randint(0, cfg.model.vocab_size, (6 * 256 + 1,), device=device)
    views = buf[:-1].view(6, 256), buf[1:].view(6, 256)  # TokenLoader.to_batch's two kinds: targets 8 bytes in,
    copies = views[0].clone(), views[1].clone()            # and targets at the start of their own storage
    evaluate_bpb(model, [views, copies], torch.ones(cfg.model.vocab_size, dtype=torch.int64, device=device), autocast)
    assert ahead >= 4 and variants() == ahead  # the loss with gradients and without, the MLP's GEMM both ways, ...


def test_checkpoint_writer_saves_the_weights_of_the_moment_of_save_off_the_gpu(tmp_path):
    """The snapshot's copies into page-locked memory are queued, not waited for; weights changed on the GPU right
    after save() returns (as the next optimizer step does) must not reach the file."""
    from tinylab import checkpoint
    from tinylab.run import Run

    model = random_weights(build_model(SMALL, "cuda"))
    opts = setup_optimizers(model)
    want = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    writer = checkpoint.CheckpointWriter()
    writer.save(Run(tmp_path), 1, model, opts, {})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # queued behind the copies on the same stream
    writer.wait()
    loaded = build_model(SMALL, "cpu")
    checkpoint.load_checkpoint(Run(tmp_path).latest_checkpoint(), loaded)
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


# ----------------------------------------------------------------------------- resume on CUDA

# a few steps of the smoke model on CUDA (as tests/test_train.py on the CPU): 2 micro-batches of 2 × 128
TINY = dict(device_batch_size=2, total_batch_size=512, eval_tokens=512, eval_every=3, sample_every=0, log_every=1)


def train_losses(run: str) -> dict[int, float]:
    path = Path(os.environ["TINYLAB_HOME"]) / "runs" / run / "metrics.jsonl"
    with open(path) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if r["kind"] == "train"}


def crash_and_resume(run: str, steps: int = 6):
    """Train `run` until a crash right after step 4 (the step-3 checkpoint exists), then resume it."""
    class Crash(Exception):
        pass

    def crash_after_step_4(rec):
        if rec["kind"] == "train" and rec["step"] == 4:
            raise Crash

    with pytest.raises(Crash):
        train("smoke", run, device="cuda", num_iterations=steps, progress=False, callback=crash_after_step_4, **TINY)
    return train("smoke", run, device="cuda", num_iterations=steps, progress=False, resume=True, **TINY)


@pytest.fixture
def deterministic(monkeypatch):
    """torch.use_deterministic_algorithms for one test, and back.

    It makes the CUDA path repeatable: flash attention's backward takes its deterministic
    variant (no atomic adds into dq), Inductor lowers the embedding backward to aten's sorted
    index_put instead of atomic adds and keeps one config per reduction (no timing-based
    choice of block sizes, which would change the summation order), and PyTorch refuses any
    cuBLAS call unless CUBLAS_WORKSPACE_CONFIG is :4096:8 or :16:8 (read at each call).
    tinylab's Triton loss kernel needs nothing: one program per row, no atomics.
    """
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch._dynamo.reset()  # nothing compiled outside the mode is reused
    yield
    torch.use_deterministic_algorithms(False)
    torch._dynamo.reset()


def test_resume_on_cuda_follows_the_uninterrupted_curve():
    full = train("smoke", "cuda-full", device="cuda", num_iterations=6, progress=False, **TINY)
    summary = crash_and_resume("cuda-cut")
    a, b = train_losses("cuda-full"), train_losses("cuda-cut")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6] and summary["step"] == full["step"] == 6
    # Outside deterministic mode atomics (flash attention's backward, the compiled embedding backward)
    # reorder fp32 sums from run to run: ~1e-7 relative, which can tip a bf16 rounding (2^-8) here and
    # there, so over 6 steps the curves drift apart by ~1e-3 at most. 0.02 (0.3 % of the loss) is far
    # below what a broken resume costs: another batch moves the loss by ~0.1, and lost AdamW moments
    # take a fresh sign-like step at the embedding's lr of 0.69.
    assert max(abs(a[s] - b[s]) for s in a) < 0.02, (a, b)


def test_resume_on_cuda_is_bitwise_in_deterministic_mode(deterministic):
    train("smoke", "det-full", device="cuda", num_iterations=6, progress=False, **TINY)
    crash_and_resume("det-cut")
    # Same kernels, same order of every sum, and a checkpoint that holds the fp32 state exactly:
    # resuming must not change a single bit of the loss curve.
    assert train_losses("det-cut") == train_losses("det-full")


# ----------------------------------------------------------------------------- decoding

@pytest.fixture
def no_tf32():
    """fp32 matmuls in full fp32 for one test: tinylab.train turns TF32 on for the whole process."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def test_cached_greedy_decoding_equals_full_recompute_on_cuda(no_tf32):
    model = random_weights(build_model(SMALL, "cuda"), seed=3).eval()
    prompt = torch.randint(0, SMALL.vocab_size, (17,), generator=torch.Generator().manual_seed(4)).tolist()

    def greedy(use_cache):
        return [tok for (tok,) in generate(model, prompt, max_tokens=64, temperature=0.0, use_cache=use_cache)]

    cached, full = greedy(True), greedy(False)
    # Token ids, exactly. The two paths' logits differ by fp32 rounding (~1e-6); that only matters where
    # the two best of 5,000 logits (std ~1) are closer than that: odds ~1e-3 over 64 steps, and fixed
    # weights and prompt make the outcome the same on every run. TF32 (10-bit mantissa) would raise the
    # odds to a coin toss, hence no_tf32.
    assert len(cached) == 64 and cached == full
    assert len(set(cached)) > 1  # a real continuation, not one token repeated


def test_decoding_with_a_kv_cache_takes_torch_ops_not_the_fused_kernels(monkeypatch):
    """Under a KV cache (odd shapes: one token, any prompt length) rotary + QK-norm and the MLP take torch's ops: the
    fused Triton kernels would JIT-compile again for each shape (2.6 s of a first sampling, docs/benchmarks.md §3).
    A full-sequence forward still takes them, which shows the count works."""
    pytest.importorskip("tinylab.kernels", reason="triton is not installed")
    import tinylab.kernels as kernels
    from tinylab.engine import KVCache

    calls = []
    for name in ("rope_rms_norm", "relu2_mlp"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    model = random_weights(build_model(SMALL, "cuda"), seed=5).eval()
    idx = torch.randint(0, SMALL.vocab_size, (1, 9), device="cuda")
    with torch.no_grad(), torch.autocast(**BF16):
        cache = KVCache(SMALL, 1, 16, "cuda", dtype=torch.bfloat16)
        model(idx[:, :8], kv_cache=cache)
        model(idx[:, 8:], kv_cache=cache)
        assert calls == []
        model(idx)
    assert set(calls) == {"rope_rms_norm", "relu2_mlp"}


# ----------------------------------------------------------------------------- VRAM estimate

ITTYBITTY = GPTConfig(depth=4, model_dim=512, n_head=8, head_dim=64, vocab_size=24576, sequence_len=2048)
SEED15M = GPTConfig(depth=4, model_dim=256, n_head=2, head_dim=128, vocab_size=24576, sequence_len=2048)
MiB = 2 ** 20


def measured_peak_bytes(config: GPTConfig, batch: int, micro_steps: int = 4, steps: int = 4) -> int:
    """Peak training memory as tinylab.bench measures it: max_memory_reserved over a few compiled bf16
    optimizer steps on random tokens, plus the CUDA context (device memory in use that the caching
    allocator does not account for: total - free - reserved)."""
    gc.collect()
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    leftover = torch.cuda.memory_reserved()  # what earlier tests still hold (cuBLAS workspaces): not ours
    torch.cuda.reset_peak_memory_stats()
    model = build_model(config, "cuda")
    optimizers = setup_optimizers(model)
    net = compile_model(model)
    tokens = torch.randint(0, config.vocab_size, (micro_steps, batch, config.sequence_len + 1), device="cuda")
    for _ in range(steps):  # gradients exist from the second micro-batch on: that is the estimated peak
        train_step(net, model, optimizers, [(t[:, :-1], t[:, 1:]) for t in tokens], torch.autocast(**BF16))
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    peak = torch.cuda.max_memory_reserved() - leftover + (total - free - torch.cuda.memory_reserved())
    del model, optimizers, net, tokens
    gc.collect()
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return peak


@pytest.mark.parametrize("config, batch", [(ITTYBITTY, 48), (SEED15M, 32)], ids=["ittybitty-48", "seed15m-32"])
def test_vram_estimate_is_within_5_percent_of_the_measured_peak(config, batch):
    measured = measured_peak_bytes(config, batch)
    estimate = vram_estimate(config, batch)["total"]
    # The estimator's constants were fitted on an H100 to 18 such peaks, all within 4.6 %
    # (docs/benchmarks.md); tests/test_calc.py holds that table to 5 %, and so does this live run.
    assert abs(estimate / measured - 1) < 0.05, f"estimate {estimate / MiB:,.0f} MiB, measured {measured / MiB:,.0f}"
