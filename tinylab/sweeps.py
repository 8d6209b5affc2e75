"""Sweep results as data: results.csv in pandas, and notebook 07's figures and answer table.

A sweep (tinylab.sweep) leaves runs/<sweep>/results.csv next to one ordinary run per point. A published
sweep, docs/sweeps/<sweep>/ in the repository, has the same layout: spec.json, results.csv and each
point's config.json + metrics.jsonl. tinylab.run finds both with its one lookup rule (find_sweep).

The answer table compares the arms of a question (tied vs untied, 8 × 64 vs 4 × 128 heads, ...). An
arm is a few knobs applied to the sweep's base (its preset and common knobs), resolved the way a point
is; the finished points whose architecture, data and optimizer knobs (and total batch) equal the arm's
are its runs. They may differ in seed, step count and speed-only knobs, so the seeds of one
configuration pool into one mean, and their range is the noise a difference must beat.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from . import run as run_module
from .config import ConfigError, DataConfig, GPTConfig, OptimConfig
from .plots import PlotError, human
from .run import SWEEP_SPEC, RunError, all_sweeps, find_sweep
from .runs import load_runs
from .sweep import PARAM_COLUMNS, RESULT_COLUMNS, RESULTS
from .sweepspec import Spec, resolve_point

# knobs two points must share to be the same experiment but for the question; the seed, the step count
# and the device batch (speed and memory only) may differ
CONTEXT = [f.name for g in (GPTConfig, DataConfig, OptimConfig) for f in fields(g)] + ["total_batch_size"]


def published_sweeps() -> dict[str, Path]:
    """The sweeps shipped in docs/sweeps/ that have results, by name (a spec alone is a sweep not run yet)."""
    root = run_module.DOCS_SWEEPS.resolve()
    return {name: d for name, d in all_sweeps().items() if d.resolve().parent == root and (d / RESULTS).is_file()}


def load_sweep(name) -> pd.DataFrame:
    """results.csv of sweep `name` (a name or a directory; tinylab.run.find_sweep), one row per point in spec
    order, indexed by point. df.attrs: name, dir, spec (the spec as a dict)."""
    d = find_sweep(name)
    if not (d / RESULTS).is_file():
        raise RunError(f"sweep {str(name)!r} has no {RESULTS} yet ({d}): run it with `python -m tinylab.sweep "
                       f"{d.name}`")
    df = pd.read_csv(d / RESULTS).reindex(columns=RESULT_COLUMNS).set_index("point")
    counts = [*PARAM_COLUMNS, "flops_per_token", "tokens_per_step", "steps", "tokens"]
    df[counts] = df[counts].astype("Int64")  # whole numbers, blank where a point is invalid
    df.attrs.update(name=str(name), dir=str(d), spec=Spec.load(d / SWEEP_SPEC).to_dict())
    return df


def sweep_runs(df: pd.DataFrame, statuses=("done",)) -> pd.DataFrame:
    """The metrics of the sweep's points (tinylab.runs.load_runs, one run per point, named by point), for
    tinylab.plots.plot_runs."""
    d = Path(df.attrs["dir"])
    points = [p for p in df.index if df.at[p, "status"] in statuses]
    if not points:
        raise RunError(f"sweep {df.attrs.get('name')!r} has no points with status {' or '.join(statuses)} yet")
    runs = load_runs([d / p for p in points])
    runs["label"] = runs["run"]  # the point's name says what differs; the legend needs nothing else
    runs.attrs["labels"] = {p: p for p in points}
    return runs


def plot_sweep(df: pd.DataFrame, figsize=(12, 5.2)) -> plt.Figure:
    """Final val bpb of every finished point against its parameters and against its training FLOPs.

    Each marker carries the gid "point:<name>" (in both panels) for tests and callers."""
    done = df[(df.status == "done") & df.val_bpb.notna()]
    if done.empty:
        raise PlotError(f"sweep {df.attrs.get('name')!r} has no finished points with a val bpb to plot yet")
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True, layout="constrained")
    markers = "osD^v<>ph*"  # colour and marker per point: points of equal size or FLOPs sit on one vertical
    for ax, column, label in zip(axes, ("params_total", "flops"), ("parameters", "training FLOPs")):
        for i, (name, r) in enumerate(done.iterrows()):
            ax.plot(r[column], r.val_bpb, markers[i % len(markers)], ms=8, color=f"C{i % 10}", alpha=0.85,
                    gid=f"point:{name}", label=name)
        if done[column].max() > 3 * done[column].min():  # a log axis only where the values span a range
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # a tick or three within one decade
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
            ax.xaxis.set_major_formatter(FuncFormatter(human))
        else:  # e.g. FLOPs of a compute-matched sweep: equal to within one step, so ticks need 4 digits
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human(v, digits=4)))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final validation bits per byte")
    fig.legend(handles=axes[0].lines, loc="outside lower center", ncol=min(len(done), 4), frameon=False, fontsize=8)
    spec = Spec.from_dict(df.attrs["spec"]) if "spec" in df.attrs else None
    fig.suptitle(f"sweep {df.attrs.get('name', '')}" + (f": {spec.budget_text}" if spec else ""))
    return fig


# ------------------------------------------------------------------------------- the answer table

@dataclass(frozen=True)
class Question:
    """A question a sweep answers: arm label -> knobs (and optionally "preset") applied to the sweep's base."""
    text: str
    arms: dict


QUESTIONS = (  # the seed's open questions about ittybitty (shared/seed: weight tying, head width, vocab, depth)
    Question("wte and lm_head: untied or tied?", {"untied": dict(tie_embeddings=False),
                                                  "tied": dict(tie_embeddings=True)}),
    Question("attention: 8 heads × 64 or 4 × 128?", {"8 × 64": dict(head_dim=64), "4 × 128": dict(head_dim=128)}),
    Question("vocabulary: 8,192, 24,576 or 32,768?", {"8,192": dict(vocab_size=8192), "24,576": dict(vocab_size=24576),
                                                      "32,768": dict(vocab_size=32768)}),
    Question("depth 4, 6 or 8 at about equal block parameters?",  # 12·depth·dim²: 12.6M, 14.5M, 14.2M
             {"4 × 512": dict(depth=4, model_dim=512), "6 × 448": dict(depth=6, model_dim=448),
              "8 × 384": dict(depth=8, model_dim=384)}),
    Question("seed15m or ittybitty?", {"ittybitty": dict(preset="ittybitty"), "seed15m": dict(preset="seed15m")}),
)


def same(a, b) -> bool:
    """Equal knob values as read back from CSV (512 == 512.0; an unset value is empty, NaN or None)."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    return all(missing) if any(missing) else bool(a == b)


def arm_rows(df: pd.DataFrame, spec: Spec, knobs: dict) -> pd.DataFrame:
    """The finished points that are this arm (see the module docstring)."""
    try:
        want = resolve_point(spec, knobs).flat()
    except ConfigError:  # an arm that is illegal on this sweep's base has no points
        return df.iloc[:0]
    done = df[(df.status == "done") & df.val_bpb.notna()]
    return done[[all(same(r[k], want[k]) for k in CONTEXT) for _, r in done.iterrows()]]


def answer(question: Question, df: pd.DataFrame, spec: Spec) -> dict:
    """One row of the answer table: each arm's mean val bpb (and seed range), the best arm and a verdict."""
    stats = {}
    for label, knobs in question.arms.items():
        rows = arm_rows(df, spec, knobs)
        if len(rows):
            stats[label] = dict(bpb=rows.val_bpb.mean(), range=rows.val_bpb.max() - rows.val_bpb.min(), n=len(rows),
                                params=rows.params_total.iloc[0])
    row = dict(question=question.text, budget=spec.budget_text, arms="", best=None, margin_bpb=None,
               seed_range_bpb=None, verdict="not in this sweep")
    if len(stats) < 2:
        return row
    order = sorted(stats, key=lambda label: stats[label]["bpb"])
    margin = stats[order[1]]["bpb"] - stats[order[0]]["bpb"]
    ranges = [s["range"] for s in stats.values() if s["n"] > 1]
    noise = max(ranges) if ranges else None
    if noise is not None and margin <= noise:
        verdict = f"no clear winner: {order[0]} leads by {margin:.4f} bpb, within the seed range {noise:.4f}"
    else:
        verdict = f"{order[0]}, by {margin:.4f} bpb" + (f" (seed range {noise:.4f})" if noise is not None
                                                        else " (one seed each: noise not measured)")
    arms = " · ".join(f"{label} ({human(stats[label]['params'])}): {stats[label]['bpb']:.4f}"
                      + (f" ±{stats[label]['range'] / 2:.4f} ({stats[label]['n']} seeds)" if stats[label]["n"] > 1
                         else "") for label in order)
    return dict(row, arms=arms, best=order[0], margin_bpb=margin, seed_range_bpb=noise, verdict=verdict)


def answer_table(df: pd.DataFrame, questions=QUESTIONS) -> pd.DataFrame:
    """One row per question (default: the seed's five) from a loaded sweep (load_sweep): its arms' mean val
    bpb, lowest first, the best arm, its margin over the runner-up and the verdict against the seed range."""
    spec = Spec.from_dict(df.attrs["spec"])
    return pd.DataFrame([answer(q, df, spec) for q in questions]).set_index("question")
