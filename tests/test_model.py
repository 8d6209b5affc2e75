"""The model against its calculators: exact counts, illegal configs, a CPU forward pass."""
import math
import random
from dataclasses import replace

import pytest
import torch

from tinylab.calc import param_counts
from tinylab.config import ConfigError, GPTConfig
from tinylab.model import GPT, CompiledRegions, build_model, compile_model, forget_compiled
from tinylab.presets import get_preset


def random_config(rng: random.Random) -> GPTConfig:
    """A random legal config; some knobs left unset so the derived defaults get exercised too."""
    head_dim = 2 * rng.randint(1, 40)
    n_kv_head = rng.randint(1, 4)
    n_head = n_kv_head * rng.randint(1, 4)
    knobs = dict(depth=rng.randint(1, 5), vocab_size=rng.randint(1, 3000), sequence_len=rng.randint(1, 64),
                 tie_embeddings=rng.random() < 0.5)
    style = rng.randrange(3)
    if style == 0:  # everything explicit
        knobs |= dict(model_dim=n_head * head_dim, n_head=n_head, head_dim=head_dim, n_kv_head=n_kv_head)
    elif style == 1:  # head_dim derived from model_dim / n_head
        knobs |= dict(model_dim=n_head * head_dim, n_head=n_head, n_kv_head=n_kv_head)
    else:  # n_head derived from model_dim / head_dim; plain multi-head attention
        knobs |= dict(model_dim=n_head * head_dim, head_dim=head_dim)
    return GPTConfig(**knobs)


def meta_model(c: GPTConfig) -> GPT:
    with torch.device("meta"):
        return GPT(c)


def numel_by_component(m: GPT) -> dict[str, int]:
    block = m.transformer.h[0]
    return dict(wte=m.transformer.wte.weight.numel(),
                attn_per_block=sum(p.numel() for p in block.attn.parameters()),
                mlp_per_block=sum(p.numel() for p in block.mlp.parameters()),
                blocks=sum(p.numel() for p in m.transformer.h.parameters()),
                lm_head=0 if m.lm_head.weight is m.transformer.wte.weight else m.lm_head.weight.numel(),
                total=sum(p.numel() for p in m.parameters()))  # parameters() yields a tied matrix once


def test_param_counts_match_the_model_for_random_configs():
    rng = random.Random(1234)
    configs = [random_config(rng) for _ in range(60)]
    assert len({c for c in configs}) > 50
    for c in configs:
        assert param_counts(c) == numel_by_component(meta_model(c)), c


@pytest.mark.parametrize("name", ["smoke", "ittybitty", "ittybitty-tied", "seed15m"])
def test_param_counts_match_the_presets(name):
    c = get_preset(name).model
    assert param_counts(c) == numel_by_component(meta_model(c))


def test_the_seed_numbers():
    """The seed's table: 1:1:1 at 12,582,912 each; nanochat's --depth=4 model; the tied target."""
    V, d = 24576, 512
    p = param_counts(get_preset("ittybitty").model)
    assert p["wte"] == p["blocks"] == p["lm_head"] == V * d == 12_582_912
    assert p["total"] == 3 * V * d == 37_748_736
    assert param_counts(get_preset("seed15m").model)["total"] == 2 * V * 256 + 4 * 12 * 256 ** 2 == 15_728_640
    assert param_counts(get_preset("ittybitty-tied").model)["total"] == 2 * V * d == 25_165_824


@pytest.mark.parametrize("knobs, words", [
    (dict(model_dim=500, head_dim=64), ["model_dim=500", "head_dim=64", "multiple of 64"]),
    (dict(model_dim=512, n_head=7), ["not divisible by n_head=7", "pick n_head"]),
    (dict(model_dim=512, n_head=8, n_kv_head=3), ["n_head=8 is not divisible by n_kv_head=3", "[1, 2, 4, 8]"]),
    (dict(model_dim=510, head_dim=51), ["head_dim=51 is odd", "rotary"]),
    (dict(model_dim=65, head_dim=32), ["model_dim=65 is odd", "even model_dim, e.g. 64 or 96"]),
    (dict(model_dim=65), ["model_dim=65 is odd", "e.g. 64 or 128"]),
    (dict(model_dim=33), ["model_dim=33 is odd", "e.g. 32 or 34"]),
    (dict(model_dim=63, n_head=3), ["model_dim=63 is odd", "e.g. 60 or 66"]),
    (dict(model_dim=100, n_head=4), ["100 / 4 = 25 is an odd head_dim", "pick n_head from [1, 2, 5, 10, 25, 50]"]),
    (dict(n_head=4, head_dim=33), ["head_dim=33 is odd"]),
    (dict(model_dim=512, n_head=8, head_dim=32), ["8 × 32 = 256", "must equal model_dim=512"]),
    (dict(model_dim=512, n_head=8, n_kv_head=16), ["n_kv_head=16 must be between 1 and n_head=8"]),
    (dict(vocab_size=0), ["vocab_size must be >= 1"]),
    (dict(depth=0), ["depth must be >= 1"]),
    (dict(sequence_len=0), ["sequence_len must be >= 1"]),
    (dict(model_dim=0), ["model_dim must be >= 1"]),
    (dict(depth=2.5), ["depth must be an integer"]),
    (dict(tie_embeddings="yes"), ["tie_embeddings must be True or False"]),
])
def test_illegal_configs_raise_a_clear_error(knobs, words):
    with pytest.raises(ConfigError) as e:
        GPTConfig(**knobs)
    assert isinstance(e.value, ValueError)
    for w in words:
        assert w in str(e.value)


def test_smoke_forward_on_cpu_has_the_right_shape_and_loss_near_ln_vocab():
    c = get_preset("smoke").model
    torch.manual_seed(0)
    model = build_model(c, "cpu")
    idx = torch.randint(0, c.vocab_size, (2, 16))
    with torch.no_grad():
        logits = model(idx)
        loss = model(idx, targets=torch.roll(idx, -1, dims=1))
    assert logits.shape == (2, 16, c.vocab_size) and logits.dtype == torch.float32
    assert math.isfinite(loss.item())
    assert abs(loss.item() - math.log(c.vocab_size)) < 0.05  # tiny lm_head init: near-uniform predictions


def test_meta_build_of_ittybitty_allocates_nothing():
    model = meta_model(get_preset("ittybitty").model)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 37_748_736


@pytest.mark.parametrize("name, device", [("ittybitty-tied", "meta"), ("smoke", "cpu")])
def test_tied_model_shares_one_parameter(name, device):
    c = replace(get_preset(name).model, tie_embeddings=True)
    model = build_model(c, device)  # to_empty() unties shared parameters; build_model must tie again
    assert model.lm_head.weight is model.transformer.wte.weight
    one_matrix = c.vocab_size * c.model_dim + c.depth * 12 * c.model_dim ** 2  # both presets are plain MHA
    assert sum(p.numel() for p in model.parameters()) == param_counts(c)["total"] == one_matrix


@pytest.mark.parametrize("option", ["rope_norm", "relu2"])
def test_kernel_options_are_checked_and_leave_the_cpu_function_unchanged(option):
    """The fused-kernel options take auto / fused / torch; on a CPU every choice computes the same function (the
    Triton ops are CUDA-only), so a checkpoint means the same thing whichever was on."""
    config = GPTConfig(depth=1, model_dim=32, head_dim=16, vocab_size=64, sequence_len=8)
    with pytest.raises(ValueError, match=option):
        GPT(config, **{option: "bogus"})
    torch.manual_seed(0)
    idx = torch.randint(0, 64, (2, 8))
    outs = []
    for choice in ("fused", "torch"):
        torch.manual_seed(0)
        model = build_model(config, **{option: choice})
        outs.append(model(idx, idx).item())
    assert outs[0] == outs[1]


def count_graphs(monkeypatch) -> list:
    """Route every torch.compile through a backend that records the graphs it is given and runs them as they are."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, **{**kw, "backend": backend}))
    torch._dynamo.reset()
    return graphs


def test_compiled_evaluation_calls_the_loss_op_once_instead_of_tracing_its_chunks(monkeypatch):
    """The per-token losses of an evaluation are one opaque op in the compiled graph (a traced chunk loop cost
    ~8 s of a cold compile for ittybitty), and give the eager model's losses."""
    graphs = count_graphs(monkeypatch)
    c = get_preset("smoke").model
    torch.manual_seed(0)
    model = build_model(c, "cpu")
    idx = torch.randint(0, c.vocab_size, (3, 16))
    targets = torch.roll(idx, -1, dims=1)
    targets[0, :5] = -1
    with torch.no_grad():
        compiled = torch.compile(model)(idx, targets, loss_reduction="none")
        eager = model(idx, targets, loss_reduction="none")
    torch._dynamo.reset()
    calls = [n.target for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.tinylab.linear_cross_entropy_losses.default) == 1
    assert compiled.shape == (3 * 16,) and (compiled[:5] == 0).all()
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("depth", [1, 3])
def test_compiled_regions_give_the_eager_loss_and_grads_with_one_block_graph_for_every_depth(monkeypatch, depth):
    """Training's compiled model (compile_model, by region) is the eager model's function, and Dynamo traces one
    graph for the stem, one for the head and one for a block whatever the depth: the layers reuse the block's
    instead of compiling one each."""
    graphs = count_graphs(monkeypatch)
    c = replace(get_preset("smoke").model, depth=depth)
    torch.manual_seed(0)
    model = build_model(c, "cpu")
    idx = torch.randint(0, c.vocab_size, (2, 16))
    targets = torch.roll(idx, -1, dims=1)
    eager = model(idx, targets)
    eager.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    net = compile_model(model)
    assert isinstance(net, CompiledRegions) and getattr(net, "no_sync", None) is None  # DDP's hook only under DDP
    loss = net(idx, targets)
    loss.backward()
    torch._dynamo.reset()
    assert len(graphs) == 3  # the stem, one block for all `depth` layers, the head
    torch.testing.assert_close(loss, eager)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


def test_forget_compiled_lets_a_process_compile_any_number_of_architectures(monkeypatch):
    """Past Dynamo's recompile limit of architectures in one process (a notebook), the next model is still compiled
    (forget_compiled then compile_model, as the trainer does) instead of left to run eagerly."""
    graphs = count_graphs(monkeypatch)
    base = get_preset("smoke").model
    limit = torch._dynamo.config.recompile_limit
    for i in range(limit + 2):
        heads = base.n_head + i + 1  # new shapes in every region
        c = replace(base, model_dim=heads * base.head_dim, n_head=heads, n_kv_head=heads)
        model = build_model(c, "cpu")
        idx = torch.randint(0, c.vocab_size, (1, 8))
        before = len(graphs)
        forget_compiled()
        compile_model(model)(idx, torch.roll(idx, -1, dims=1))
        assert len(graphs) - before == 3, f"architecture {i + 1} was not compiled"
    torch._dynamo.reset()


def test_compiled_regions_leave_the_model_itself_eager(monkeypatch):
    """Decoding with a KV cache runs the same model object eagerly after it was compiled by region: no graph is
    traced for it, and its logits equal an uncompiled twin's."""
    from tinylab.engine import KVCache

    graphs = count_graphs(monkeypatch)
    c = get_preset("smoke").model
    torch.manual_seed(0)
    model = build_model(c, "cpu")
    idx = torch.randint(0, c.vocab_size, (1, 8))
    compile_model(model)(idx, torch.roll(idx, -1, dims=1))
    traced = len(graphs)
    cache = KVCache(c, 1, 8, "cpu")
    with torch.no_grad():
        steps = torch.cat([model(idx[:, :4], kv_cache=cache)[:, -1]] +
                          [model(idx[:, i:i + 1], kv_cache=cache)[:, -1] for i in range(4, 8)])
        full = model(idx)[0, 3:]
    torch._dynamo.reset()
    assert len(graphs) == traced == 3
    torch.testing.assert_close(steps, full, rtol=1e-4, atol=1e-4)
