"""Training curves of several runs overlaid: loss, val bpb, LR multiplier and throughput.

One figure, four panels sharing the x axis (step, tokens, FLOPs or wall time), one colour
per run. Train loss is noisy batch to batch, so it is drawn twice: raw (thin, faint) and
EMA-smoothed (the line to read). A dotted vertical line marks where each run reaches
Chinchilla's 20 tokens per parameter; when a run stops short of it, the loss panel says
where it would be instead of stretching the axis.

Every line carries a gid ("loss-raw:<run>", "loss-smooth:<run>", "val-bpb:<run>", "lr:<run>",
"tok-per-s:<run>" (smoothed; "tok-per-s-raw:<run>" raw), "chinchilla:<run>") so tests and callers can find it.
"""
from __future__ import annotations

import io
import math
import numbers
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from . import paths
from .calc import CHINCHILLA_RATIO
from .errors import TinylabError

X_AXES = {"step": "step", "tokens": "tokens", "flops": "training FLOPs", "elapsed": "wall time"}
# run i: colour C(i % 10), and a line style that changes every 10 runs, so two runs share both only 40 apart
# (dotted is left to the Chinchilla marks)
LINE_STYLES = ("-", "--", "-.", (0, (3, 1, 1, 1, 1, 1)))


class PlotError(TinylabError, ValueError):
    """A plot request that cannot be drawn; the message says what to pass instead."""


def ema(values, beta: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard smooths): no pull toward 0 at the start."""
    out, avg, weight = np.empty(len(values)), 0.0, 0.0
    for i, v in enumerate(np.asarray(values, dtype=float)):
        if np.isfinite(v):
            avg, weight = beta * avg + (1 - beta) * v, beta * weight + (1 - beta)
        out[i] = avg / weight if weight else np.nan
    return out


def auto_smooth(n: int) -> float:
    """EMA coefficient averaging over ~1/15 of the logged points (at least 1, at most 200)."""
    return 1 - 1 / min(max(n / 15, 1), 200)


def human(v: float, _pos=None, digits: int = 3) -> str:
    """1234567 -> '1.23M' (tick labels for token and FLOP counts), to `digits` significant digits."""
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}g}{suffix}"
    return f"{v:.{digits}g}"


def where(v: float, x: str) -> str:
    """A position on the x axis in words: 'step 3.2k', '3.28M tokens', '1.2T FLOPs', '~2.6 h'."""
    if x == "elapsed":  # v in seconds
        return f"~{v / 3600:.2g} h" if v >= 3600 else f"~{v / 60:.2g} min" if v >= 60 else f"~{v:.2g} s"
    return {"step": f"step {human(v)}", "tokens": f"{human(v)} tokens", "flops": f"{human(v)} FLOPs"}[x]


def chinchilla_tokens(run: pd.DataFrame) -> float | None:
    """Tokens at 20 per parameter (Chinchilla's compute-optimal ratio), as calc.tokens_for_ratio counts
    them (all parameters), from the count the run stored in its config.json."""
    params = run["params"].iloc[0]
    return CHINCHILLA_RATIO * float(params) if params and pd.notna(params) else None


def to_x(run: pd.DataFrame, tokens: float, x: str) -> float | None:
    """A token count in the units of the x axis (step from tokens per step, time from the run's rate)."""
    first = run.iloc[0]
    if x == "tokens":
        return tokens
    if x == "step":
        return tokens / first.tokens_per_step if pd.notna(first.tokens_per_step) and first.tokens_per_step else None
    if x == "flops":
        return tokens * first.flops_per_token if pd.notna(first.flops_per_token) else None
    tr = run[(run.kind == "train")].dropna(subset=["tokens", "elapsed"])
    if len(tr) < 2 or tr.tokens.iloc[-1] <= 0:
        return None
    if tokens <= tr.tokens.iloc[-1]:
        return float(np.interp(tokens, tr.tokens, tr.elapsed))
    return tokens * tr.elapsed.iloc[-1] / tr.tokens.iloc[-1]  # extrapolate at the run's average rate


def same_dir(a, b) -> bool:
    """Two frames' load paths name one directory (an unknown path is never the same)."""
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def split_runs(frames) -> list[tuple[str, str, pd.DataFrame]]:
    """(run, label, rows) per run, in load order, keeping runs that have no rows yet.

    A run in two frames (load_run of one directory twice) is drawn once. Two frames of one name from different
    directories are refused: their lines would share a gid and a legend entry; load_runs names them apart."""
    out: dict[str, tuple[str, pd.DataFrame]] = {}
    where: dict[str, str | None] = {}  # run -> the directory its frame was loaded from (load_run's attrs)
    for f in [frames] if isinstance(frames, pd.DataFrame) else list(frames):
        labels = dict(f.attrs.get("labels", {}))
        for name, g in f.groupby("run", sort=False):
            labels.setdefault(name, g.label.iloc[0])
        for name, label in labels.items():
            path = f.attrs.get("path")
            if name in out and not same_dir(path, where[name]):
                raise PlotError(f"two frames hold a run named {name!r} ({where[name] or '?'} and {path or '?'}): load "
                                f"them together with tinylab.runs.load_runs([...]), which names runs of one name apart")
            if name not in out:
                out[name], where[name] = (label, f[f.run == name]), path
    return [(name, label, rows) for name, (label, rows) in out.items()]


def elapsed_scale(df: pd.DataFrame) -> tuple[float, str]:
    """Seconds per unit and the unit's label for a wall-time axis that fits the longest run."""
    t = df.elapsed.max()
    return (3600.0, " (h)") if t > 3 * 3600 else (60.0, " (min)") if t > 300 else (1.0, " (s)")


def draw_run(axes, i: int, name: str, label: str, run: pd.DataFrame, x: str, scale: float, logx: bool,
             smooth: float | None) -> dict:
    """One run's lines in the four panels; returns what the figure needs afterwards."""
    ax_loss, ax_bpb, ax_lr, ax_tps = axes
    color, ls = f"C{i % 10}", LINE_STYLES[i // 10 % len(LINE_STYLES)]
    tr = run[run.kind == "train"].dropna(subset=[x])
    ev = run[run.kind == "eval"].dropna(subset=[x, "val_bpb"])
    if logx:  # step 0 / 0 tokens has no place on a log axis
        tr, ev = tr[tr[x] > 0], ev[ev[x] > 0]
    tx, ex = tr[x].to_numpy(float) / scale, ev[x].to_numpy(float) / scale
    beta = auto_smooth(len(tr)) if smooth is None else smooth
    ax_loss.plot(tx, tr.loss, color=color, ls=ls, lw=0.8, alpha=0.3, gid=f"loss-raw:{name}")
    (handle,) = ax_loss.plot(tx, ema(tr.loss, beta), color=color, ls=ls, lw=1.8, gid=f"loss-smooth:{name}",
                             label=label if len(run) else f"{label} (no metrics yet)")
    ax_bpb.plot(ex, ev.val_bpb, marker="o", ls=ls, color=color, ms=4, lw=1.4, gid=f"val-bpb:{name}")
    ax_lr.plot(tx, tr.lr, color=color, ls=ls, lw=1.4, gid=f"lr:{name}")
    ax_tps.plot(tx, tr.tok_per_s, color=color, ls=ls, lw=0.8, alpha=0.3, gid=f"tok-per-s-raw:{name}")
    ax_tps.plot(tx, ema(tr.tok_per_s, beta), color=color, ls=ls, lw=1.4, gid=f"tok-per-s:{name}")
    ct = chinchilla_tokens(run) if len(run) else None
    cx = to_x(run, ct, x) if ct else None
    return dict(name=name, color=color, beta=beta, handle=handle, chinchilla=cx / scale if cx else None,
                # y range of the loss without the first steps' ln(vocab) cliff
                top=tr.loss.iloc[max(1, len(tr) // 30):].max() if len(tr) > 10 else None,
                xmax=max(np.nanmax(tx, initial=0), np.nanmax(ex, initial=0)))


def mark_chinchilla(axes, drawn: list[dict], x: str, scale: float) -> None:
    """A dotted line where a run reaches 20 tokens/param, or a note when that lies beyond the axis."""
    xmax, ax_loss = max(d["xmax"] for d in drawn), axes[0]
    for d in drawn:
        cx = d["chinchilla"]
        if cx is None:
            continue
        if cx <= xmax:
            for ax in axes:
                ax.axvline(cx, color=d["color"], ls=":", lw=1.2, gid=f"chinchilla:{d['name']}")
        else:
            ax_loss.annotate(f"{CHINCHILLA_RATIO} tokens/param at {where(cx * scale, x)} →",
                             xy=(0.99, 0.97 - 0.07 * len(ax_loss.texts)), xycoords="axes fraction", ha="right",
                             va="top", color=d["color"], fontsize=8, gid=f"chinchilla:{d['name']}")


def label_axes(axes, drawn: list[dict], x: str, unit: str, logx: bool, logy: bool) -> None:
    ax_loss, ax_bpb, ax_lr, ax_tps = axes
    tops = [d["top"] for d in drawn if d["top"] is not None]
    if tops and not logy:
        lo = np.nanmin([np.nanmin(ln.get_ydata()) for ln in ax_loss.lines
                        if (ln.get_gid() or "").startswith("loss-") and len(ln.get_ydata())] or [0])
        ax_loss.set_ylim(lo - 0.05 * (max(tops) - lo), max(tops) + 0.05 * (max(tops) - lo))
    betas = {d["beta"] for d in drawn}
    b = f"β={betas.pop():.3g}" if len(betas) == 1 else "β per run"
    titles = [(ax_loss, f"train loss (nats/token): raw and EMA-smoothed ({b})", "loss"),
              (ax_bpb, "validation bits per byte", "bpb"),
              (ax_lr, "learning-rate multiplier", "× base LR"),
              (ax_tps, "throughput (tokens/s): raw and EMA-smoothed", "tok/s")]
    for ax, title, ylabel in titles:
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
    ax_tps.yaxis.set_major_formatter(FuncFormatter(human))
    ax_tps.set_ylim(bottom=0)
    for ax in (ax_lr, ax_tps):
        ax.set_xlabel(X_AXES[x] + unit)
        if x in ("tokens", "flops") and not logx:
            ax.xaxis.set_major_formatter(FuncFormatter(human))
    plain = FuncFormatter(lambda v, _pos: f"{v:.3g}")  # 4.5, not 4.5×10⁰
    for ax in (ax_loss, ax_bpb) if logy else ():
        if not any(np.any(np.asarray(ln.get_ydata(), dtype=float) > 0) for ln in ax.lines):
            continue  # nothing to log-scale yet (a run just started); matplotlib would refuse the empty axis
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.grid(True, which="minor", alpha=0.15)


def check_x(x) -> str:
    """x if it names an axis of X_AXES; PlotError otherwise (the runs widget's dropdown offers the same)."""
    if not isinstance(x, str) or x not in X_AXES:  # a list is unhashable: `in` alone would raise TypeError
        raise PlotError(f"x must be one of {', '.join(map(repr, X_AXES))}, got {x!r}")
    return x


def check_smooth(smooth) -> float | None:
    """smooth if it is None or an EMA coefficient in [0, 1); PlotError otherwise.

    A bool is refused although Python counts it as a number: smooth=False would silently mean 0 (no smoothing),
    smooth=True 1 (a flat line). A string ("0.5", from a text box) is refused rather than guessed at."""
    if smooth is None:
        return None
    number = isinstance(smooth, numbers.Real) and not isinstance(smooth, bool)
    if not (number and math.isfinite(smooth) and 0 <= smooth < 1):
        raise PlotError(f"smooth is an EMA coefficient: a number in [0, 1) such as 0.9, or None to pick one from "
                        f"the run length; got {smooth!r} (0 means no smoothing)")
    return float(smooth)


def plot_runs(frames, x: str = "step", logx: bool = False, logy: bool = False, smooth: float | None = None,
              figsize=(12, 7.5)) -> plt.Figure:
    """Figure of the runs in `frames` (one DataFrame from load_runs, or a list of load_run frames).

    x: 'step' | 'tokens' | 'flops' | 'elapsed'. smooth: EMA coefficient in [0, 1) for the loss
    (None picks one from the run length). logy applies to the loss and bpb panels. On a linear
    y axis the loss panel leaves out the first ~1/30 of logged steps' cliff from ln(vocab), which
    would otherwise squash the part of the curve worth reading."""
    check_x(x)
    smooth = check_smooth(smooth)
    runs = split_runs(frames)
    if not runs:
        raise PlotError("no runs to plot: pass frames from tinylab.runs.load_runs([...])")
    scale, unit = elapsed_scale(pd.concat([r for _, _, r in runs])) if x == "elapsed" else (1.0, "")
    fig, grid = plt.subplots(2, 2, figsize=figsize, sharex=True, layout="constrained")
    axes = list(grid.flat)
    for ax, name in zip(axes, ("loss", "val_bpb", "lr", "tok_per_s")):
        ax.set_label(name)
        ax.grid(alpha=0.3)
    drawn = [draw_run(axes, i, name, label, run, x, scale, logx, smooth) for i, (name, label, run) in enumerate(runs)]
    mark_chinchilla(axes, drawn, x, scale)
    label_axes(axes, drawn, x, unit, logx, logy)
    handles = [d["handle"] for d in drawn]
    if any(d["chinchilla"] is not None for d in drawn):
        handles.append(plt.Line2D([], [], color="gray", ls=":", label=f"{CHINCHILLA_RATIO} tokens/param (Chinchilla)"))
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 4), frameon=False)
    return fig


def save_figure(fig: plt.Figure, path, dpi: int = 120) -> Path:
    """Write the figure atomically (a reader never sees half a PNG); the format follows the suffix."""
    path = Path(path)
    if path.is_dir():
        raise PlotError(f"{path} is a directory: give a file name, e.g. {path / 'curves.png'}")
    fmt, known = path.suffix.lstrip(".").lower() or "png", fig.canvas.get_supported_filetypes()
    if fmt not in known:
        raise PlotError(f"cannot write a .{fmt} image ({path}): use a file name ending in one of "
                        f"{', '.join('.' + k for k in sorted(known))}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a folder should be, a folder we may not create, ...
        raise PlotError(f"cannot create the folder {path.parent} for {path.name} ({e.strerror}): give a file in a "
                        f"folder that exists or can be made") from None
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=fmt)
    return paths.atomic_write(path, buf.getvalue())
