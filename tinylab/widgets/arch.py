"""Design a GPT with sliders: exact parameter counts, their split, and training VRAM vs batch (notebook 01).

`architecture_report` is the plain function (a config in, (table, figure) out, usable headless);
`architecture_view` wraps `show_report` in one control per knob of SLIDERS, named after the
knob and starting at the preset's value, that redraws on every change. An illegal combination
shows its ConfigError message in place of the report.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import replace

import pandas as pd
from matplotlib.figure import Figure

from ..calc import (CHINCHILLA_RATIO, GiB, flops_per_token, group_vram, max_device_batch, param_counts,
                    tokens_for_ratio, vram_estimate)
from ..calc.vram import calibration_points
from ..config import ConfigError, GPTConfig, TrainConfig, knob_fields
from ..presets import get_preset

GPU_MEMORY_GB = {"RTX 3060 (12 GB)": 12, "RTX 4080 (16 GB)": 16, "RTX 3090 / 4090 (24 GB)": 24,
                 "A100 (40 GB)": 40, "H100 / A100 (80 GB)": 80}
# The knobs notebook 01 puts under a control, with the control's range; names, help and starting
# values come from tinylab.config and the preset. Options always include the preset's value.
SLIDERS = {
    "depth": dict(min=1, max=24),
    "model_dim": dict(min=32, max=2048, step=32),
    "head_dim": dict(options=[16, 32, 64, 128, 256]),
    "n_kv_head": dict(options=[1, 2, 4, 8, 16]),      # plus "= n_head"
    "vocab_size": dict(options=[4096, 8192, 16384, 24576, 32768, 50304, 65536]),
    "sequence_len": dict(options=[128, 256, 512, 1024, 2048, 4096]),
    "device_batch_size": dict(min=1, max=256),
    "tie_embeddings": dict(),
}


def param_table(c: GPTConfig) -> pd.DataFrame:
    """Exact parameter counts by component with their share of the total."""
    p = param_counts(c)
    rows = {"wte": p["wte"], "attention": c.depth * p["attn_per_block"], "mlp": c.depth * p["mlp_per_block"],
            "lm_head" + (" (tied)" if c.tie_embeddings else ""): p["lm_head"], "total": p["total"]}
    return pd.DataFrame({"params": rows, "share": {k: f"{100 * n / p['total']:.2f}%" for k, n in rows.items()}})


def vocab_table(c: GPTConfig, vocab_sizes=(4096, 8192, 16384, 24576, 32768, 50304, 65536)) -> pd.DataFrame:
    """How the vocabulary decides where a tiny model's parameters go: c with each vocab size."""
    rows = []
    for v in vocab_sizes:
        p = param_counts(replace(c, vocab_size=v))
        emb = p["wte"] + p["lm_head"]
        rows.append(dict(vocab_size=v, embeddings=emb, blocks=p["blocks"], total=p["total"],
                         embedding_share=f"{100 * emb / p['total']:.1f}%"))
    return pd.DataFrame(rows).set_index("vocab_size")


def memory_fit(c: GPTConfig, batch: int, gpu_mem_gb: float, compile: bool = True) -> tuple[float, int]:
    """(estimated training VRAM in bytes at `batch`, the largest device batch that fits gpu_mem_gb)."""
    return vram_estimate(c, batch, compile=compile)["total"], max_device_batch(c, gpu_mem_gb * GiB, compile=compile)


def summary(c: GPTConfig, batch: int, gpu_mem_gb: float, compile: bool = True, fit=None) -> str:
    """FLOPs, the Chinchilla token budget, and the memory verdict, one line each (fit: memory_fit's, if known)."""
    v, best = fit or memory_fit(c, batch, gpu_mem_gb, compile)
    return "\n".join([
        c.describe(),
        f"FLOPs per token: {flops_per_token(c):,}",
        f"tokens at {CHINCHILLA_RATIO}:1 (Chinchilla): {tokens_for_ratio(c):,}",
        f"training VRAM at batch {batch} × {c.sequence_len}: {v / GiB:.2f} GiB (estimate); "
        f"largest batch for {gpu_mem_gb:g} GiB: {best}",
    ])


def architecture_figure(c: GPTConfig, batch: int, gpu_mem_gb: float, compile: bool = True, fit=None) -> Figure:
    """Left: the parameter split. Right: estimated VRAM vs device batch, GPU memory and the largest batch."""
    v, best = fit or memory_fit(c, batch, gpu_mem_gb, compile)
    p = param_counts(c)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.5])
    attn, mlp = c.depth * p["attn_per_block"], c.depth * p["mlp_per_block"]
    x = ["wte", f"blocks ({c.depth})", "lm_head (tied)" if c.tie_embeddings else "lm_head"]
    ax1.bar(x[0], p["wte"] / 1e6, color="C0")  # categories appear in the order first drawn
    ax1.bar(x[1], attn / 1e6, color="C1", label="attention")
    ax1.bar(x[1], mlp / 1e6, bottom=attn / 1e6, color="C2", label="mlp")
    ax1.bar(x[2], p["lm_head"] / 1e6, color="C0")
    for i, n in enumerate([p["wte"], p["blocks"], p["lm_head"]]):
        ax1.annotate(f"{n / 1e6:.2f}M\n{100 * n / p['total']:.1f}%", (i, n / 1e6), xytext=(0, 2),
                     textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("parameters (millions)")
    ax1.set_title(f"{p['total'] / 1e6:.2f}M parameters: wte : blocks : lm_head", fontsize=10)
    ax1.legend(fontsize=7, loc="upper center", ncols=2)
    ax1.margins(y=0.4)

    bmax = max(2 * best, int(1.5 * batch), 8)
    bs = list(range(1, bmax + 1, max(1, bmax // 64)))
    groups = [group_vram(vram_estimate(c, b, compile=compile)) for b in bs]
    ax2.stackplot(bs, *[[g[k] / GiB for g in groups] for k in groups[0]], labels=list(groups[0]), alpha=0.8)
    ax2.axhline(gpu_mem_gb, color="k", ls="--", lw=1, label=f"GPU memory {gpu_mem_gb:g} GiB")
    if best:
        ax2.axvline(best, color="k", ls=":", lw=1)
        ax2.annotate(f"max batch {best}", (best, gpu_mem_gb), xytext=(4, 4), textcoords="offset points")
    ax2.plot([batch], [v / GiB], "ko", ms=4, label=f"batch {batch}")
    ax2.set_xlabel(f"device batch size (sequences of {c.sequence_len})")
    ax2.set_ylabel("training VRAM (GiB, estimate)")
    ax2.set_xlim(0, bmax)
    ax2.legend(fontsize=7, loc="upper left")
    return fig


def architecture_report(preset: TrainConfig, gpu_mem_gb: float = 24,
                        compile: bool = True) -> tuple[pd.DataFrame, Figure]:
    """(parameter table, figure) of a config's architecture at its device batch size."""
    c = preset.model
    return param_table(c), architecture_figure(c, preset.batch.device_batch_size, gpu_mem_gb, compile)


def control(name: str, value):
    """The ipywidgets control of one knob of SLIDERS, labelled with its name, its help as tooltip."""
    import ipywidgets as w

    spec, help_ = SLIDERS[name], knob_fields()[name][1].metadata["help"]
    common = dict(description=name, tooltip=help_, style={"description_width": "120px"})
    if name == "tie_embeddings":
        return w.Checkbox(value, **common)
    if "options" in spec:
        options = [(str(o), o) for o in sorted(set(spec["options"]) | {value} - {None})]
        if name == "n_kv_head":  # 0 stands for "same as n_head": ipywidgets shows None as an empty selection
            options = [("= n_head", 0)] + options
        return w.Dropdown(options=options, value=value or 0, **common)
    return w.IntSlider(value, min=min(spec["min"], value), max=max(spec["max"], value), step=spec.get("step", 1),
                       **common)  # the range widened to the preset's value, which a slider would silently clamp


def slider_values(preset: TrainConfig) -> dict:
    """The starting value of every control: the preset's knobs (n_kv_head None when it equals n_head)."""
    flat = preset.flat()
    values = {name: flat[name] for name in SLIDERS}
    if preset.model.n_kv_head == preset.model.n_head:
        values["n_kv_head"] = None
    return values


def architecture_view(preset: TrainConfig, gpu_mem_gb: float = 24):
    """Widget: one control per knob of SLIDERS (starting at the preset's values) and a GPU size."""
    import ipywidgets as w

    controls = {name: control(name, v) for name, v in slider_values(preset).items()}
    controls["gpu_mem_gb"] = w.Dropdown(options=list(GPU_MEMORY_GB.items()), description="GPU memory",
                                        value=gpu_mem_gb if gpu_mem_gb in GPU_MEMORY_GB.values() else 24,
                                        style={"description_width": "120px"})
    out = w.Output()

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            knobs = {name: c.value for name, c in controls.items()}
            show_report(preset, **knobs | {"n_kv_head": knobs["n_kv_head"] or None})

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    names = list(controls)
    return w.VBox([w.HBox([w.VBox([controls[n] for n in names[:5]]), w.VBox([controls[n] for n in names[5:]])]), out])


def show_report(preset: TrainConfig, gpu_mem_gb: float = 24, compile: bool = True, **knobs) -> None:
    """Display the table, summary and figure of the preset with `knobs` changed, or the ConfigError
    message (what the widget shows on every change)."""
    from IPython.display import display

    try:
        cfg = preset.override(**knobs)
    except ConfigError as e:
        print(f"not a valid architecture: {e}")
        return
    if isinstance(gpu_mem_gb, bool) or not isinstance(gpu_mem_gb, numbers.Real) or not 0 < gpu_mem_gb < math.inf:
        print(f"not a GPU memory size: gpu_mem_gb={gpu_mem_gb!r}; give GiB as a number > 0, e.g. 24")
        return
    c, batch = cfg.model, cfg.batch.device_batch_size
    fit = memory_fit(c, batch, gpu_mem_gb, compile)  # shared by the summary and the figure
    display(param_table(c))
    print(summary(c, batch, gpu_mem_gb, compile, fit))
    display(architecture_figure(c, batch, gpu_mem_gb, compile, fit))


def vram_calibration_figure(points=None) -> Figure:
    """Measured H100 peaks (points; `python -m tinylab.bench vram`) against vram_estimate (lines)."""
    points = calibration_points() if points is None else points
    fig = Figure(figsize=(7.5, 4))
    ax = fig.subplots()
    batches = range(1, max(p["batch"] for p in points) + 9)
    key = lambda p: (p["preset"], p["compile"], p["fused_rope_norm"], p["fused_relu2"])  # noqa: E731
    for i, (name, compiled, fused, relu2) in enumerate(sorted({key(p) for p in points})):
        pts = sorted((p["batch"], p["measured"] / GiB) for p in points if key(p) == (name, compiled, fused, relu2))
        c = get_preset(name).model
        torch_ops = " + ".join(op for op, on in (("QK-norm", fused), ("ReLU²", relu2)) if not on)
        label = f"{name}, {'compiled' if compiled else 'eager'}" + (f", torch {torch_ops}" if torch_ops else "")
        estimate = lambda b: vram_estimate(c, b, compile=compiled, fused_rope_norm=fused,  # noqa: E731
                                           fused_relu2=relu2)["total"] / GiB
        ax.plot(batches, [estimate(b) for b in batches], color=f"C{i}", lw=1.2, label=f"{label}: estimate")
        ax.plot(*zip(*pts), "o", color=f"C{i}", ms=5, label=f"{label}: measured")
        worst = max(abs(estimate(b) / m - 1) for b, m in pts)
        ax.annotate(f"max err {100 * worst:.1f}%", pts[-1], textcoords="offset points", xytext=(6, -3),
                    fontsize=8, color=f"C{i}")
    ax.set(xlabel="device batch (sequences of 2048)", ylabel="peak GPU memory (GiB)",
           title="Training VRAM on an H100: estimate vs measured peak (reserved + CUDA context)")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig
