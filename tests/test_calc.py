"""Calculators: FLOPs, token budgets, time, the VRAM estimator and the `python -m tinylab.calc` CLI."""
import json
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest

from tinylab.calc import (GPU_PEAK_FLOPS, flops_per_token, gpu_peak_flops, max_device_batch, param_counts,
                          tokens_for_ratio, training_time_s, vram, vram_estimate)
from tinylab.calc.__main__ import main
from tinylab.config import GPTConfig, TrainConfig
from tinylab.errors import cli
from tinylab.paths import REPO
from tinylab.presets import get_preset

ITTY = get_preset("ittybitty").model
GiB = 2 ** 30
MiB = 2 ** 20


def test_flops_per_token_is_six_matmul_params_plus_attention():
    import torch
    from tinylab.model import GPT
    with torch.device("meta"):
        m = GPT(ITTY)
    matmul = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    assert flops_per_token(ITTY) == 6 * matmul + 12 * 4 * 512 * 2048
    tied = replace(ITTY, tie_embeddings=True)  # fewer parameters, same matmuls
    assert flops_per_token(tied) == flops_per_token(ITTY)


def test_tokens_and_training_time():
    assert tokens_for_ratio(ITTY) == 20 * 37_748_736  # the seed's "755M tokens" at 20:1
    assert tokens_for_ratio(ITTY, ratio=10) == 10 * 37_748_736
    t = training_time_s(ITTY, 1_000_000, 100e12, 0.5)
    assert t == pytest.approx(1_000_000 * flops_per_token(ITTY) / 50e12)
    assert training_time_s(ITTY, 1_000_000, 100e12, 0.25) == pytest.approx(2 * t)
    with pytest.raises(ValueError, match="mfu"):
        training_time_s(ITTY, 1, 1e12, 1.5)
    with pytest.raises(ValueError, match="ratio"):
        tokens_for_ratio(ITTY, 0)


def test_gpu_peak_lookup_by_torch_device_name():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == GPU_PEAK_FLOPS["H100"] == 989e12
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", measured=True) == 798e12
    assert gpu_peak_flops("NVIDIA H100 PCIe") == GPU_PEAK_FLOPS["H100 PCIe"]
    assert gpu_peak_flops("NVIDIA GeForce RTX 3090") == 71e12
    assert gpu_peak_flops("cpu") is None


def test_every_named_gpu_has_a_compute_capability():
    from tinylab.calc import GPU_CAPABILITY, gpu_has_fp8

    assert set(GPU_CAPABILITY) == {k for k in GPU_PEAK_FLOPS if "(" not in k}  # the measured rows share their GPU's
    assert not gpu_has_fp8("cpu") and gpu_has_fp8("NVIDIA H100 PCIe") and not gpu_has_fp8("NVIDIA GeForce RTX 3090")


def test_vram_terms_follow_the_optimizer_layout():
    p = param_counts(ITTY)
    v = vram_estimate(ITTY, 8)
    assert v["weights"] == v["gradients"] == 4 * p["total"]
    assert v["optimizer_muon"] == 4 * p["blocks"]
    assert v["optimizer_adamw"] == 8 * (p["wte"] + p["lm_head"])
    assert v["total"] == sum(val for k, val in v.items() if k != "total")
    assert sum(vram.group_vram(v).values()) == v["total"]
    tied = vram_estimate(replace(ITTY, tie_embeddings=True), 8)
    assert v["total"] - tied["total"] == (4 + 4 + 8) * p["lm_head"]  # weights, grads, Adam moments of lm_head


def test_vram_grows_with_batch_and_sequence_and_eager_needs_more():
    totals = [vram_estimate(ITTY, b)["total"] for b in range(0, 130, 4)]
    assert all(a < b for a, b in zip(totals, totals[1:]))
    acts = [vram_estimate(ITTY, b)["activations"] for b in (8, 16)]
    assert acts[1] == pytest.approx(2 * acts[0], rel=1e-6)  # activations are linear in tokens
    assert vram_estimate(ITTY, 8, seq_len=1024)["activations"] == pytest.approx(acts[0] / 2, rel=1e-6)
    assert vram_estimate(ITTY, 8, compile=False)["total"] > vram_estimate(ITTY, 8)["total"]
    with pytest.raises(ValueError, match="device_batch_size"):
        vram_estimate(ITTY, -1)


@pytest.mark.parametrize("gpu_gib", [1, 8, 24, 80])
def test_max_device_batch_is_the_largest_that_fits(gpu_gib):
    budget = gpu_gib * GiB - vram.FIT_HEADROOM_BYTES
    b = max_device_batch(ITTY, gpu_gib * GiB)
    if b == 0:
        assert vram_estimate(ITTY, 1)["total"] > budget
    else:
        assert vram_estimate(ITTY, b)["total"] <= budget < vram_estimate(ITTY, b + 1)["total"]


def test_max_device_batch_matches_what_trained_under_a_24_gib_cap():
    """`python -m tinylab.bench fit` on an H100 capped at 24 GiB: batch 176 trains, 184 runs out of memory
    (docs/bench/h100_fit_24gib_relu2.jsonl, the training step with both fused ops)."""
    assert max_device_batch(ITTY, 24 * GiB) == 176
    assert max_device_batch(ITTY, 24 * GiB, fused_relu2=False) < 176  # ReLU² in torch saves h too
    assert max_device_batch(ITTY, 80 * GiB) > 3 * max_device_batch(ITTY, 24 * GiB)


def test_estimate_is_within_5_percent_of_every_measured_h100_peak():
    points = vram.calibration_points()
    assert len(points) >= 14 and {p["fused_rope_norm"] for p in points} == {p["fused_relu2"] for p in points} \
        == {p["compile"] for p in points} == {False, True}
    for p in points:
        est = vram_estimate(get_preset(p["preset"]).model, p["batch"], compile=p["compile"],
                            fused_rope_norm=p["fused_rope_norm"], fused_relu2=p["fused_relu2"])["total"]
        assert abs(est / p["measured"] - 1) < 0.05, p


def test_the_fp8_term_matches_what_fp8_lm_head_adds_to_measured_h100_peaks():
    """Peak allocated memory of ittybitty's step at batch 48 with `--fp8-lm-head` minus without, measured in one
    process each time (tinylab.bench train rows of three calls): the estimate's logits_fp8 term within 10%."""
    bench = REPO / "docs" / "bench"
    diffs = []
    for f in ("h100_relu2/steps_before_after.jsonl", "h100_ce/steps_ce_tile.jsonl", "h100_ce/steps_fp8_hybrid.jsonl"):
        rows = [json.loads(line) for line in (bench / f).read_text().splitlines()]
        peak = lambda loss, relu2: [r["peak_allocated_mib"] for r in rows  # noqa: E731
                                    if r["loss"] == loss and r.get("relu2") == relu2 and r.get("chunk", 8192) == 8192]
        for relu2 in ("torch", "auto"):
            if peak("chunked-fp8", relu2) and peak("chunked", relu2):
                diffs.append((statistics.mean(peak("chunked-fp8", relu2)) - statistics.mean(peak("chunked", relu2))) * MiB)
    assert len(diffs) == 4
    v, v8 = vram_estimate(ITTY, 48), vram_estimate(ITTY, 48, fp8_lm_head=True)
    assert v["logits_fp8"] == 0 and v8["total"] - v["total"] == v8["logits_fp8"]
    for measured in diffs:
        assert v8["logits_fp8"] == pytest.approx(measured, rel=0.1)
    assert max_device_batch(ITTY, 24 * GiB, fp8_lm_head=True) < max_device_batch(ITTY, 24 * GiB)


def test_the_fused_qk_norm_drops_exactly_its_saved_tensors():
    fused, plain = (vram.activation_bytes_per_token(ITTY, fused_rope_norm=f) for f in (True, False))
    assert plain["qk_prenorm"] == 2 * (8 + 8) * 64 and fused["qk_prenorm"] == 0
    assert plain["norm_stats"] - fused["norm_stats"] == 4 * (8 + 8)  # fp32 rstd per q and k head
    odd = ITTY.with_knobs(model_dim=480, head_dim=48)  # head_dim/2 = 24: the kernel cannot run it
    assert not odd.fusable_rope_norm and vram.activation_bytes_per_token(odd)["qk_prenorm"] > 0


def test_loss_chunk_mirrors_the_loss_module():
    from tinylab import loss
    assert vram.LOSS_CHUNK_TOKENS == loss.CHUNK_TOKENS


def test_config_with_knobs_rederives_the_head_layout():
    c = ITTY.with_knobs(model_dim=768)
    assert (c.model_dim, c.head_dim, c.n_head, c.n_kv_head) == (768, 64, 12, 12)
    c = ITTY.with_knobs(head_dim=128)
    assert (c.model_dim, c.head_dim, c.n_head) == (512, 128, 4)
    c = ITTY.with_knobs(n_head=16, n_kv_head=4, vocab_size=8192)
    assert (c.model_dim, c.head_dim, c.n_head, c.n_kv_head, c.vocab_size) == (512, 32, 16, 4, 8192)
    assert ITTY.with_knobs() == ITTY


def test_two_head_knobs_determine_the_third():
    """model_dim = n_head × head_dim: given n_head and head_dim, model_dim is their product, not 64 × depth."""
    heads = lambda c: (c.model_dim, c.n_head, c.head_dim)  # noqa: E731
    assert heads(GPTConfig(depth=4, n_head=4, head_dim=128)) == (512, 4, 128)
    assert heads(GPTConfig(depth=4, n_head=3, head_dim=20)) == (60, 3, 20)
    assert heads(GPTConfig(depth=2, n_head=4, head_dim=32)) == (128, 4, 32)
    assert heads(ITTY.with_knobs(n_head=4, head_dim=128)) == (512, 4, 128)
    smoke = get_preset("smoke")  # depth 2, model_dim 64, head_dim 32
    assert heads(smoke.override(n_head=3, head_dim=20).model) == (60, 3, 20)
    assert heads(smoke.override(n_head=4, head_dim=32).model) == (128, 4, 32)  # the product, whatever depth says
    assert heads(ITTY.with_knobs(model_dim=768, head_dim=128)) == (768, 6, 128)
    assert heads(ITTY.with_knobs(model_dim=768, n_head=4)) == (768, 4, 192)
    for one, layout in [(dict(n_head=4), (64, 4, 16)), (dict(head_dim=16), (64, 4, 16)),
                        (dict(model_dim=128), (128, 4, 32))]:  # a lone one keeps the preset's other
        assert heads(smoke.override(**one).model) == layout
    assert heads(get_preset("seed15m").override(head_dim=64).model) == (256, 4, 64)
    # a lone one keeps the other that was given, over a default: head_dim 32 stays, model_dim follows
    assert heads(GPTConfig(depth=4, head_dim=32).with_knobs(n_head=4)) == (128, 4, 32)
    assert heads(GPTConfig(depth=4, n_head=2).with_knobs(model_dim=512)) == (512, 2, 256)


def test_unset_knobs_follow_a_new_depth_and_given_ones_stay():
    assert TrainConfig().override(depth=8).model == GPTConfig(depth=8)
    assert GPTConfig().with_knobs(depth=8) == GPTConfig(depth=8)
    assert GPTConfig(depth=8).model_dim == 512
    assert GPTConfig(depth=4, head_dim=32).with_knobs(depth=8) == GPTConfig(depth=8, head_dim=32)
    assert GPTConfig(depth=4, n_kv_head=2).with_knobs(depth=8) == GPTConfig(depth=8, n_kv_head=2)
    assert GPTConfig(depth=4, model_dim=256).with_knobs(depth=8).model_dim == 256
    assert GPTConfig.from_dict(GPTConfig().to_dict()).with_knobs(depth=8).model_dim == 256  # a run's config.json
    for name, dim in [("ittybitty", 512), ("smoke", 64), ("seed15m", 256)]:  # presets set model_dim
        assert get_preset(name).override(depth=8).model.model_dim == dim


def test_cli_prints_the_breakdown_and_the_vram_table(capsys):
    assert main(["--preset", "ittybitty", "--batch-sizes", "8,48"]) == 0
    out = capsys.readouterr().out
    for n in ["12,582,912", "37,748,736", "4,194,304", "8,388,608", f"{flops_per_token(ITTY):,}"]:
        assert n in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["8"], ["48"])]
    assert [r[0] for r in rows] == ["8", "48"]
    assert f"fits 24 GiB: {max_device_batch(ITTY, 24 * GiB)}" in out


def test_cli_fp8_lm_head_counts_its_copies(capsys):
    """--fp8-lm-head: the table's totals grow by the estimate's FP8 term, and the largest batch that fits shrinks;
    a run planned with the knob (schedule.plan) on a GPU with FP8 sizes the same way, on one without as bf16."""
    from tinylab.schedule import plan
    totals = {}
    for flags in ([], ["--fp8-lm-head"]):
        main(["--preset", "ittybitty", "--batch-sizes", "48", *flags])
        out = capsys.readouterr().out
        totals[bool(flags)] = float(next(line.split()[5] for line in out.splitlines() if line.split()[:1] == ["48"])[:-1])
    assert "FP8 lm_head" in out and f"fits 24 GiB: {max_device_batch(ITTY, 24 * GiB, fp8_lm_head=True)}" in out
    term = vram_estimate(ITTY, 48, fp8_lm_head=True)["logits_fp8"] / GiB
    assert totals[True] - totals[False] == pytest.approx(term, abs=0.011)  # the table prints 2 decimals
    gib = {fp8: plan("ittybitty", gpu="H100", fp8_lm_head=fp8)["vram_gib"] for fp8 in (False, True)}
    assert gib[True] - gib[False] == pytest.approx(term)
    assert plan("ittybitty", gpu="RTX 3090", fp8_lm_head=True)["vram_gib"] == gib[False]  # no FP8 there: bf16


def test_cli_knobs_change_the_architecture(capsys):
    main(["--preset", "ittybitty", "--tie-embeddings"])
    assert "25,165,824" in capsys.readouterr().out
    main(["--preset", "ittybitty", "--model-dim", "256", "--head-dim", "128"])
    assert "15,728,640" in capsys.readouterr().out  # the seed's nanochat model
    assert main(["--preset", "ittybitty", "--n-head", "4", "--head-dim", "128"]) == 0
    assert "dim 512, 4 heads × 128" in capsys.readouterr().out
    assert main(["--preset", "smoke", "--n-head", "3", "--head-dim", "20"]) == 0
    assert "dim 60, 3 heads × 20" in capsys.readouterr().out
    assert main(["--preset", "smoke", "--vocab-size", "5e2"]) == 0  # a whole number in e-notation, as a grid's
    assert "vocab 500," in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--preset", "nope"], ["unknown preset 'nope'", "ittybitty", "smoke"]),
    (["--head-dim", "63"], ["head_dim=63 is odd"]),
    (["--preset", "smoke", "--model-dim", "65"], ["model_dim=65 is odd", "use an even model_dim, e.g. 64 or 96"]),
    (["--batch-sizes", "8,x"], ["--batch-sizes: must be positive integers"]),
    (["--gpu", "TPU"], ["invalid choice: 'TPU'", "RTX 3090"]),
    (["--vocab-size", "100000"], ["vocab_size=100,000 cannot be trained", "65,536"]),
    (["--ratio", "inf"], ["ratio must be a finite number > 0"]),
])
def test_cli_errors_are_one_clear_line(capsys, args, words):
    assert cli(main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for w in words:
        assert w in err


def test_module_runs_as_a_script():
    r = subprocess.run([sys.executable, "-m", "tinylab.calc", "--preset", "seed15m"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "15,728,640" in r.stdout and "largest device batch" in r.stdout


def test_architecture_report_and_widget(capsys):
    from tinylab.widgets.arch import architecture_report, architecture_view, show_report, vocab_table
    table, fig = architecture_report(get_preset("ittybitty-tied"))
    assert table.loc["total", "params"] == param_counts(replace(ITTY, tie_embeddings=True))["total"]
    assert len(fig.axes) == 2
    show_report(get_preset("ittybitty"), model_dim=480)
    assert "not a valid architecture: model_dim=480 is not divisible by head_dim=64" in capsys.readouterr().out
    for bad in (float("nan"), 0, -1, float("inf"), "24", True):
        show_report(get_preset("ittybitty"), gpu_mem_gb=bad)
        assert capsys.readouterr().out.startswith("not a GPU memory size")
    vt = vocab_table(ITTY)
    assert vt.loc[24576, "total"] == param_counts(ITTY)["total"]
    view = architecture_view(get_preset("smoke"))
    sliders = view.children[0].children[0].children  # depth, model_dim, head_dim, n_kv_head, vocab_size
    capsys.readouterr()
    sliders[1].value = 80  # not a multiple of smoke's head_dim 32: the message, not an exception
    assert "not a valid architecture: model_dim=80" in capsys.readouterr().out
    sliders[2].value = 16  # legal again
    assert "not a valid architecture" not in capsys.readouterr().out
    deep = architecture_view(get_preset("smoke").override(depth=30))  # beyond the slider's usual range
    assert deep.children[0].children[0].children[0].value == 30 and "depth 30" in capsys.readouterr().out


def test_show_report_sizes_memory_once_and_calibration_closes_its_file(capsys, monkeypatch, tmp_path):
    import gc
    import json
    import warnings

    from tinylab.widgets import arch
    calls = []
    monkeypatch.setattr(arch, "max_device_batch", lambda *a, **k: calls.append(a) or 7)
    arch.show_report(get_preset("smoke"))
    assert len(calls) == 1  # summary and figure share one memory_fit, so they cannot disagree
    assert "largest batch for 24 GiB: 7" in capsys.readouterr().out
    f = tmp_path / "vram.jsonl"
    f.write_text(json.dumps(dict(preset="smoke", compile=False, batch=2, peak_reserved_mib=100, context_mib=500)) + "\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        arch.vram_calibration_figure(vram.calibration_points([f]))
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_the_fused_relu2_drops_exactly_the_relu_output():
    fused, plain = (vram.activation_bytes_per_token(ITTY, fused_relu2=f) for f in (True, False))
    assert plain["mlp_hidden"] - fused["mlp_hidden"] == 2 * ITTY.mlp_dim  # bf16 relu(h), 2048 wide
    del fused["mlp_hidden"], plain["mlp_hidden"]
    assert fused == plain
