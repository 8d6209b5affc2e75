"""Design a GPT with sliders: exact parameter counts, their split, and training VRAM vs batch (notebook 01).

`architecture_report` is the plain function (knobs in, (table, figure) out, usable headless);
`architecture_view` wraps it in sliders and dropdowns that redraw on every change. An
illegal combination shows its ConfigError message in place of the report.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..calc import CHINCHILLA_RATIO, GiB, flops_per_token, param_counts, tokens_for_ratio
from ..config import GPTConfig
from ..paths import REPO
from ..presets import get_preset
from ..vram import group_vram, max_device_batch, vram_estimate

GPU_MEMORY_GB = {"RTX 3060 (12 GB)": 12, "RTX 4080 (16 GB)": 16, "RTX 3090 / 4090 (24 GB)": 24,
                 "A100 (40 GB)": 40, "H100 / A100 (80 GB)": 80}


def knobs_config(depth: int = 4, model_dim: int = 512, head_dim: int = 64, n_kv_head: int | None = None,
                 vocab_size: int = 24576, seq_len: int = 2048, tied: bool = False) -> GPTConfig:
    """The GPTConfig the sliders describe (n_head = model_dim / head_dim; raises ConfigError)."""
    return GPTConfig(depth=depth, model_dim=model_dim, head_dim=head_dim, n_kv_head=n_kv_head,
                     vocab_size=vocab_size, sequence_len=seq_len, tie_embeddings=tied)


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


def architecture_report(depth: int = 4, model_dim: int = 512, head_dim: int = 64, n_kv_head: int | None = None,
                        vocab_size: int = 24576, seq_len: int = 2048, batch: int = 48, tied: bool = False,
                        gpu_mem_gb: float = 24, compile: bool = True) -> tuple[pd.DataFrame, Figure]:
    """(parameter table, figure) for the knobs; raises ConfigError for an illegal combination."""
    c = knobs_config(depth, model_dim, head_dim, n_kv_head, vocab_size, seq_len, tied)
    return param_table(c), architecture_figure(c, batch, gpu_mem_gb, compile)


def preset_knobs(preset) -> dict:
    """The report's knobs for a Preset (its architecture and device batch size)."""
    c = preset.model
    return dict(depth=c.depth, model_dim=c.model_dim, head_dim=c.head_dim,
                n_kv_head=None if c.n_kv_head == c.n_head else c.n_kv_head, vocab_size=c.vocab_size,
                seq_len=c.sequence_len, batch=preset.device_batch_size, tied=c.tie_embeddings)


def architecture_view(gpu_mem_gb: float = 24, **knobs):
    """Widget: sliders for every knob (initial values from `knobs`, e.g. preset_knobs(preset))."""
    import ipywidgets as w

    k = dict(depth=4, model_dim=512, head_dim=64, n_kv_head=None, vocab_size=24576, seq_len=2048, batch=48,
             tied=False) | knobs
    choices = lambda opts, v: sorted(set(opts) | {v})  # noqa: E731 (keep the initial value selectable)
    style = dict(style={"description_width": "90px"})
    controls = dict(
        depth=w.IntSlider(k["depth"], min=1, max=24, description="depth", **style),
        model_dim=w.IntSlider(k["model_dim"], min=32, max=2048, step=32, description="model_dim", **style),
        head_dim=w.Dropdown(options=choices([16, 32, 64, 128, 256], k["head_dim"]), value=k["head_dim"],
                            description="head_dim", **style),
        # 0 stands for "same as n_head" (None): ipywidgets shows a None value as an empty selection
        n_kv_head=w.Dropdown(options=[("= n_head", 0)] + [(str(n), n) for n in choices([1, 2, 4, 8, 16], k["n_kv_head"] or 1)],
                             value=k["n_kv_head"] or 0, description="n_kv_head", **style),
        vocab_size=w.Dropdown(options=choices([4096, 8192, 16384, 24576, 32768, 50304, 65536], k["vocab_size"]),
                              value=k["vocab_size"], description="vocab_size", **style),
        seq_len=w.Dropdown(options=choices([128, 256, 512, 1024, 2048, 4096], k["seq_len"]), value=k["seq_len"],
                           description="seq_len", **style),
        batch=w.IntSlider(k["batch"], min=1, max=256, description="batch", **style),
        tied=w.Checkbox(k["tied"], description="tie wte / lm_head"),
        gpu_mem_gb=w.Dropdown(options=list(GPU_MEMORY_GB.items()), value=gpu_mem_gb if gpu_mem_gb in
                              GPU_MEMORY_GB.values() else 24, description="GPU memory", **style),
    )
    out = w.Output()

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            show_report(**{name: c.value for name, c in controls.items()} | {"n_kv_head": controls["n_kv_head"].value or None})

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    names = list(controls)
    return w.VBox([w.HBox([w.VBox([controls[n] for n in names[:5]]), w.VBox([controls[n] for n in names[5:]])]), out])


def show_report(depth: int = 4, model_dim: int = 512, head_dim: int = 64, n_kv_head: int | None = None,
                vocab_size: int = 24576, seq_len: int = 2048, batch: int = 48, tied: bool = False,
                gpu_mem_gb: float = 24, compile: bool = True) -> None:
    """Display the table, summary and figure for the knobs, or the ConfigError message (what the widget shows)."""
    from IPython.display import display

    from ..config import ConfigError
    try:
        c = knobs_config(depth, model_dim, head_dim, n_kv_head, vocab_size, seq_len, tied)
    except ConfigError as e:
        print(f"not a valid architecture: {e}")
        return
    fit = memory_fit(c, batch, gpu_mem_gb, compile)  # shared by the summary and the figure
    display(param_table(c))
    print(summary(c, batch, gpu_mem_gb, compile, fit))
    display(architecture_figure(c, batch, gpu_mem_gb, compile, fit))


CALIBRATION = REPO / "docs" / "bench" / "vram_h100.jsonl"


def vram_calibration_figure(path=CALIBRATION) -> Figure:
    """Measured H100 peaks (points; `python -m tinylab.bench vram`) against vram_estimate (lines)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    fig = Figure(figsize=(7.5, 4))
    ax = fig.subplots()
    batches = range(1, max(r["batch"] for r in rows) + 9)
    for i, key in enumerate(sorted({(r["preset"], r["compile"]) for r in rows})):
        name, compiled = key
        pts = sorted((r["batch"], (r["peak_reserved_mib"] + r["context_mib"]) / 1024) for r in rows
                     if (r["preset"], r["compile"]) == key)
        c, label = get_preset(name).model, f"{name}, {'compiled' if compiled else 'eager'}"
        est = [vram_estimate(c, b, compile=compiled)["total"] / GiB for b in batches]
        ax.plot(batches, est, color=f"C{i}", lw=1.2, label=f"{label}: estimate")
        ax.plot(*zip(*pts), "o", color=f"C{i}", ms=5, label=f"{label}: measured")
        worst = max(abs(vram_estimate(c, b, compile=compiled)["total"] / GiB / m - 1) for b, m in pts)
        ax.annotate(f"max err {100 * worst:.1f}%", pts[-1], textcoords="offset points", xytext=(6, -3),
                    fontsize=8, color=f"C{i}")
    ax.set(xlabel="device batch (sequences of 2048)", ylabel="peak GPU memory (GiB)",
           title="Training VRAM on an H100: estimate vs measured peak (reserved + CUDA context)")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig
