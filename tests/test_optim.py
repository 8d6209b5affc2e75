"""Muon / AdamW setup, the schedules and the batch plan."""
import math

import pytest
import torch

from tinylab.config import GPTConfig
from tinylab.model import build_model
from tinylab.optim import Muon, apply_schedule, learning_rates, setup_optimizers, zeropower_via_newtonschulz5
from tinylab.schedule import BatchSizeError, lr_multiplier, muon_momentum, num_iterations_for, plan_batch

TINY = GPTConfig(depth=2, model_dim=64, head_dim=32, vocab_size=128, sequence_len=32)


@pytest.mark.parametrize("shape", [(32, 32), (16, 64), (96, 24)])
def test_newton_schulz_flattens_singular_values(shape):
    torch.manual_seed(0)
    k = min(shape)
    U, _ = torch.linalg.qr(torch.randn(shape[0], k))
    V, _ = torch.linalg.qr(torch.randn(shape[1], k))
    G = U @ torch.diag(torch.logspace(0, 1, k)) @ V.T  # singular values 1 ... 10
    X = zeropower_via_newtonschulz5(G)
    assert X.shape == G.shape and X.dtype == torch.float32
    sv = torch.linalg.svdvals(X)
    assert sv.min() > 0.6 and sv.max() < 1.2, sv  # a 10× spread squeezed to ~1 (exact UVᵀ: all 1)
    cos = (X * (U @ V.T)).sum() / (X.norm() * (U @ V.T).norm())
    assert cos > 0.98  # and it points along U Vᵀ


def test_muon_step_matches_hand_computed_nesterov_update():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(48, 16))  # tall: update scaled by sqrt(48/16)
    p0 = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.9)
    g1, g2 = torch.randn(48, 16), torch.randn(48, 16)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    buf1 = 0.1 * g1
    buf2 = 0.9 * buf1 + 0.1 * g2
    u1 = zeropower_via_newtonschulz5(g1 + 0.9 * (buf1 - g1))
    u2 = zeropower_via_newtonschulz5(g2 + 0.9 * (buf2 - g2))
    expected = p0 - 0.1 * math.sqrt(3) * (u1 + u2)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf2)


def test_muon_batches_equal_shapes_bit_identically_to_one_matrix_at_a_time():
    """Muon stacks same-shape matrices into one Newton–Schulz call: on the CPU that must be exactly the
    per-matrix update (mixed shapes, tall and wide, two steps so the momentum buffers matter)."""
    torch.manual_seed(0)
    shapes = [(8, 8), (16, 8), (8, 16), (8, 8), (16, 8), (8, 8)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    opt = Muon(params, lr=0.05, momentum=0.9)
    for _ in range(2):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for r, b, g in zip(ref, bufs, grads):  # the textbook loop, one matrix at a time
            b.lerp_(g, 0.1)
            u = zeropower_via_newtonschulz5(g.lerp(b, 0.9))
            r.add_(u, alpha=-0.05 * max(1.0, r.size(0) / r.size(1)) ** 0.5)
    assert all(torch.equal(p.detach(), r) for p, r in zip(params, ref))


def test_muon_refuses_vectors():
    with pytest.raises(ValueError, match="AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(5))])


@pytest.mark.parametrize("tied", [False, True])
def test_every_parameter_in_exactly_one_group(tied):
    model = build_model(GPTConfig(**{**TINY.to_dict(), "tie_embeddings": tied}))
    opts = setup_optimizers(model)
    seen = [id(p) for o in opts for g in o.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    scale = (64 / 768) ** -0.5
    lrs = learning_rates(opts)
    if tied:
        assert lrs == pytest.approx(dict(tied=0.004 * scale, matrix=0.02))
        assert learning_rates(setup_optimizers(model, tied_lr=0.01))["tied"] == pytest.approx(0.01 * scale)
    else:
        assert lrs == pytest.approx(dict(embedding=0.2 * scale, unembedding=0.004 * scale, matrix=0.02))
    assert all(p.ndim == 2 for p in opts[1].param_groups[0]["params"])


def test_apply_schedule_scales_from_initial_lr():
    opts = setup_optimizers(build_model(TINY))
    before = learning_rates(opts)
    apply_schedule(opts, 0.5, momentum=0.9)
    apply_schedule(opts, 0.25, momentum=0.9)  # not compounding
    assert learning_rates(opts) == pytest.approx({k: v * 0.25 for k, v in before.items()})
    assert opts[1].param_groups[0]["momentum"] == 0.9


def test_optimizers_fit_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model(TINY)
    opts = setup_optimizers(model)
    x = torch.randint(0, 128, (4, 32))
    losses = []
    for _ in range(30):
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(128), rel=0.05)
    assert losses[-1] < 0.5 * losses[0]


def test_lr_schedule_trapezoid():
    n = 100
    lrm = [lr_multiplier(s, n, warmup_ratio=0.1, warmdown_ratio=0.2, final_lr_frac=0.0) for s in range(n + 1)]
    assert lrm[0] == pytest.approx(0.1) and lrm[9] == 1.0 and lrm[50] == 1.0 and lrm[80] == 1.0
    assert lrm[90] == pytest.approx(0.5) and lrm[100] == 0.0
    assert all(a >= b for a, b in zip(lrm[10:], lrm[11:]))  # never increases after warmup
    assert lr_multiplier(100, 100, final_lr_frac=0.1) == pytest.approx(0.1)


def test_muon_momentum_warmup():
    assert muon_momentum(0) == pytest.approx(0.85)
    assert muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == muon_momentum(10_000) == pytest.approx(0.95)


def test_batch_48_is_rounded_to_nearest_valid_total():
    bp = plan_batch(524_288, 48, 2048)
    micro = 48 * 2048
    assert bp.tokens_per_micro_step == micro == 98_304
    # nearest multiple: 524288 / 98304 = 5.33 -> 5
    assert bp.grad_accum == 5 and bp.total_batch_size == 491_520 == 5 * micro
    assert abs(bp.total_batch_size - 524_288) <= micro / 2
    note = bp.note()
    assert "524,288" in note and "491,520" in note and "\n" not in note


def test_batch_plan_exact_and_multi_rank():
    bp = plan_batch(524_288, 32, 2048)
    assert not bp.rounded and bp.grad_accum == 8 and bp.note() == ""
    bp = plan_batch(524_288, 32, 2048, world_size=2)
    assert bp.grad_accum == 4 and bp.total_batch_size == 524_288
    bp = plan_batch(1000, 8, 128)  # smaller than one micro-step: one micro-step
    assert bp.grad_accum == 1 and bp.total_batch_size == 1024 and bp.rounded
    assert plan_batch(3 * 1024 + 512, 8, 128).grad_accum == 4  # ties round up
    with pytest.raises(BatchSizeError, match="device_batch_size"):
        plan_batch(2048, 0, 128)


def test_num_iterations_for_target_tokens():
    assert num_iterations_for(300 * 2048, 2048) == 300
    assert num_iterations_for(10, 2048) == 1


def test_lr_multiplier_clamps_steps_outside_the_run():
    assert lr_multiplier(100, 50) == 0.0  # past the end: the final rate, not a negative one
    assert lr_multiplier(100, 50, final_lr_frac=0.1) == pytest.approx(0.1)
    assert lr_multiplier(-5, 50, warmup_ratio=0.1) == lr_multiplier(0, 50, warmup_ratio=0.1)


def test_plan_names_the_known_gpus_for_an_unknown_one():
    from tinylab.calc import GPU_PEAK_FLOPS
    from tinylab.schedule import plan

    with pytest.raises(ValueError, match="unknown GPU 'T4'") as e:
        plan("smoke", gpu="T4")
    assert all(name in str(e.value) for name in GPU_PEAK_FLOPS)
