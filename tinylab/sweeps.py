"""Sweep results as data: results.csv in pandas, and notebook 07's figures and answer table.

A sweep (tinylab.sweep) leaves runs/<sweep>/results.csv next to one ordinary run per point. A published
sweep, docs/sweeps/<sweep>/ in the repository, has the same layout: spec.json, results.csv and each
point's config.json + metrics.jsonl. tinylab.run finds both with its one lookup rule (find_sweep).

The answer table compares the arms of a question (tied vs untied, 8 × 64 vs 4 × 128 heads, ...). An
arm is a few knobs applied to the sweep's base (its preset and common knobs), resolved the way a point
is; the finished points whose architecture, data and optimizer knobs (and total batch) equal the arm's
are its runs. Only points at one budget pool: the sweep's budget, or without one the tokens a point trained
(num_iterations and target_tokens may vary from point to point then). Within a budget they may differ in seed
and speed-only knobs, so the seeds of one configuration pool into one mean, and their range is the noise a
difference must beat. Arms that met at several budgets get one comparison per budget.
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

# knobs two points must share to be the same experiment but for the question; the seed and the device batch
# (speed and memory only) may differ, and the length is matched by budget (budget_key), not by these knobs
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
    # colour and marker per point: points of equal size or FLOPs sit on one vertical. 9 markers against 10 colours
    # (coprime), so no two of the first 90 points look alike
    markers = "osD^v<>p*"
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
    """The points, of any status, that are this arm (see the module docstring)."""
    try:
        want = resolve_point(spec, knobs).flat()
    except ConfigError:  # an arm that is illegal on this sweep's base has no points
        return df.iloc[:0]
    return df[[all(same(r[k], want[k]) for k in CONTEXT) for _, r in df.iterrows()]]


def budget_key(row, spec: Spec):
    """The budget a finished point trained at: the sweep's, which every point gets (None), or without one the
    point's own tokens, so points of other lengths (num_iterations, target_tokens) are never pooled as seeds."""
    return None if spec.budget else int(row.tokens)


def budget_words(key, spec: Spec) -> str:
    return spec.budget_text if key is None else f"{key:,} tokens"


def arm_stats(rows: pd.DataFrame) -> dict:
    """Mean val bpb of an arm's finished points at one budget; they differ in seed alone (or in speed-only knobs),
    so their range is the noise. n counts distinct seeds, not points."""
    return dict(bpb=rows.val_bpb.mean(), range=rows.val_bpb.max() - rows.val_bpb.min(), n=rows.seed.nunique(),
                points=len(rows), params=rows.params_total.iloc[0])


def compare(stats: dict) -> dict:
    """The arms of one budget (label -> arm_stats, at least two): their text, the best, its margin and a verdict."""
    order = sorted(stats, key=lambda label: stats[label]["bpb"])
    margin = stats[order[1]]["bpb"] - stats[order[0]]["bpb"]
    ranges = [s["range"] for s in stats.values() if s["points"] > 1]
    noise = max(ranges) if ranges else None
    if not clear_win(margin, noise):
        verdict = f"no clear winner: {order[0]} leads by {margin:.4f} bpb, within the seed range {noise:.4f}"
    else:
        verdict = f"{order[0]}, by {margin:.4f} bpb" + (f" (seed range {noise:.4f})" if noise is not None
                                                        else " (one seed each: noise not measured)")
    arms = " · ".join(f"{label} ({human(stats[label]['params'])}): {stats[label]['bpb']:.4f}" + spread(stats[label])
                      for label in order)
    return dict(arms=arms, best=order[0], margin_bpb=margin, seed_range_bpb=noise, verdict=verdict)


def clear_win(margin: float, noise: float | None) -> bool:
    """The best arm leads by more than the seed range (or no range was measured)."""
    return noise is None or margin > noise


def spread(s: dict) -> str:
    """' ±half-range (N seeds)' for an arm of several points ('(3 points, 2 seeds)' where a seed repeats)."""
    if s["points"] < 2:
        return ""
    count = f"{s['n']} seeds" if s["n"] == s["points"] else f"{s['points']} points, {s['n']} seed{'s' * (s['n'] > 1)}"
    return f" ±{s['range'] / 2:.4f} ({count})"


def not_compared(stats: dict, unfinished: dict, spec: Spec) -> str:
    """Why a question has no comparison: arms with no finished point yet, or arms only at different budgets."""
    reasons = [f"{label} has no finished point yet ({', '.join(statuses)})" for label, statuses in unfinished.items()]
    finished = {label: budget_words(key, spec) for key, arms in stats.items() for label in arms}
    if len(finished) > 1:
        reasons.append("the arms finished only at different budgets (" +
                       "; ".join(f"{label}: {words}" for label, words in finished.items()) + ")")
    return "not answered: " + "; ".join(reasons) if reasons else "not in this sweep"


def answer(question: Question, df: pd.DataFrame, spec: Spec) -> dict:
    """One row of the answer table: each arm's mean val bpb (and seed range), the best arm and a verdict.

    Arms are compared at one budget: without a sweep budget a point's budget is its own tokens, and where the
    arms met at several, the row gives one comparison per budget and names the best only if it wins at each."""
    stats: dict = {}       # budget -> arm label -> arm_stats
    unfinished: dict = {}  # arm label -> the statuses of its points, none of them finished with a val bpb
    for label, knobs in question.arms.items():
        rows = arm_rows(df, spec, knobs)
        done = rows[(rows.status == "done") & rows.val_bpb.notna()]
        if len(rows) and done.empty:
            unfinished[label] = sorted({("done, no val bpb" if st == "done" else str(st)) for st in rows.status})
        for key in sorted({budget_key(r, spec) for _, r in done.iterrows()}, key=lambda k: k or 0):
            at = done[[budget_key(r, spec) == key for _, r in done.iterrows()]]
            stats.setdefault(key, {})[label] = arm_stats(at)
    row = dict(question=question.text, budget=spec.budget_text, arms="", best=None, margin_bpb=None,
               seed_range_bpb=None, verdict="not in this sweep")
    compared = {key: compare(arms) for key, arms in stats.items() if len(arms) > 1}
    if not compared:
        return dict(row, verdict=not_compared(stats, unfinished, spec))
    pending = "".join(f"; {label} has no finished point yet ({', '.join(st)})" for label, st in unfinished.items())
    c = next(iter(compared.values())) if len(stats) == 1 else per_budget(compared, stats, spec)
    return dict(row, **dict(c, verdict=c["verdict"] + pending))


def per_budget(compared: dict, stats: dict, spec: Spec) -> dict:
    """A question whose arms trained at several budgets: one comparison each, in the arms and verdict text; the
    best arm only where it wins clearly at every budget, and its smallest margin."""
    at = {key: f"at {budget_words(key, spec)}" for key in stats}
    winners = {c["best"] for c in compared.values()}
    clear = len(winners) == 1 and all(clear_win(c["margin_bpb"], c["seed_range_bpb"]) for c in compared.values())
    alone = [f"{at[key]} only {', '.join(arms)} finished" for key, arms in stats.items() if key not in compared]
    head = (f"{winners.pop()} at each of {len(compared)} budgets" if clear
            else f"no one winner over {len(compared)} budgets")
    noises = [c["seed_range_bpb"] for c in compared.values() if c["seed_range_bpb"] is not None]
    return dict(arms=" | ".join(f"{at[key]}: {c['arms']}" for key, c in compared.items()),
                best=next(iter(compared.values()))["best"] if clear else None,
                margin_bpb=min(c["margin_bpb"] for c in compared.values()) if clear else None,
                seed_range_bpb=max(noises) if noises else None,
                verdict=f"{head}: " + "; ".join(f"{at[key]}: {c['verdict']}" for key, c in compared.items())
                + "".join(f"; {a}" for a in alone))


def answer_table(df: pd.DataFrame, questions=QUESTIONS) -> pd.DataFrame:
    """One row per question (default: the seed's five) from a loaded sweep (load_sweep): its arms' mean val
    bpb, lowest first, the best arm, its margin over the runner-up and the verdict against the seed range."""
    spec = Spec.from_dict(df.attrs["spec"])
    return pd.DataFrame([answer(q, df, spec) for q in questions]).set_index("question")
