"""CORE tasks and grammar probes of several runs side by side: bar charts with 95% intervals.

The numbers come from each run's newest `core` or `probes` record in metrics.jsonl (written by
tinylab.eval, or by training with core_every / probes_every), so a published run in docs/runs/
plots as well as a local one without its checkpoint. Error bars are Wilson 95% intervals of the
accuracy (tinylab.probes.wilson). The probes' pairs are balanced, so chance is 50% for every
phenomenon. CORE's tasks have different chance levels, so their bars show centered accuracy,
(accuracy - baseline) / (1 - baseline): 0 is chance, 1 is perfect, and the interval is mapped
the same way.

Every bar group carries a gid ("bars:<run>"), the chance line "chance", for tests and callers.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plots import PlotError
from .probes import wilson
from .run import Run, distinct_runs

PARTS = {"core": "tasks", "probes": "phenomena"}  # the record's dict field of per-part numbers
COLUMNS = ["run", "step", "overall", "name", "n", "accuracy", "value", "low", "high"]


def newest_record(run, kind: str) -> dict | None:
    """The run's last `kind` record (core or probes) in metrics.jsonl, or None."""
    records = [r for r in Run.find(run).metrics.read() if r.get("kind") == kind]
    return records[-1] if records else None


def eval_table(runs, kind: str) -> pd.DataFrame:
    """One row per run and task (core) or phenomenon (probes), from each run's newest `kind` record.

    value/low/high are what the bars show: centered accuracy for core, accuracy for probes, with the
    Wilson 95% interval. `overall` is the record's CORE or overall probe accuracy. Runs without a
    record are left out and listed in df.attrs["missing"]. A run given twice is taken once, and two runs
    of one name from different directories are named apart by their paths (tinylab.run.distinct_runs)."""
    check_kind(kind)
    rows, missing = [], []
    for r in distinct_runs(runs):
        rec = newest_record(r, kind)
        if rec is None:
            missing.append(r.name)
            continue
        for name, part in rec[PARTS[kind]].items():
            base = part["baseline"] if kind == "core" else 0.0  # probes: plain accuracy
            lo, hi = wilson(round(part["accuracy"] * part["n"]), part["n"])  # accuracy = correct / n exactly
            value, low, high = ((p - base) / (1 - base) for p in (part["accuracy"], lo, hi))
            rows.append(dict(run=r.name, step=rec["step"], overall=rec["core" if kind == "core" else "accuracy"],
                             name=name, n=part["n"], accuracy=part["accuracy"], value=value, low=low, high=high))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(missing=missing, kind=kind)  # plot_eval checks it: both kinds' tables have the same columns
    return df


def check_kind(kind) -> str:
    """kind if it is one of PARTS (the evaluations with a number per task or phenomenon); PlotError otherwise."""
    if not isinstance(kind, str) or kind not in PARTS:
        hint = "; val bpb is one number per evaluation, drawn as a curve by tinylab.plots.plot_runs" \
            if kind == "bpb" else ""
        raise PlotError(f"kind must be {' or '.join(map(repr, PARTS))}, got {kind!r}{hint}")
    return kind


def plot_eval(table: pd.DataFrame, kind: str, figsize=None) -> plt.Figure:
    """Grouped bars of eval_table(runs, kind): one colour per run, Wilson 95% error bars, a dashed chance line."""
    if not isinstance(table, pd.DataFrame):
        raise PlotError(f"plot_eval draws a table, got {type(table).__name__}: pass eval_table(runs, {kind!r})")
    check_kind(kind)
    # core's bars are centered accuracy around 0, probes' plain accuracy around 0.5: drawn as the other kind, they
    # would be wrong without a sign. A table built by hand, or one that lost its attrs (pd.concat), is taken as given
    made = table.attrs.get("kind")
    if made is not None and made != kind:
        raise PlotError(f"this table holds {made} results (eval_table(runs, {made!r})), but kind is {kind!r}: "
                        f"call plot_eval(table, {made!r}), or make a {kind} table with eval_table(runs, {kind!r})")
    if table.empty:
        raise PlotError(f"no {kind} records to plot: evaluate a run first, e.g. "
                        f"`python -m tinylab.eval {kind} --run NAME` or tinylab.eval.evaluate(NAME, {kind!r})")
    names, runs = list(dict.fromkeys(table.name)), list(dict.fromkeys(table.run))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=figsize or (min(16.0, 3 + 0.3 * len(names) * (2 + len(runs))), 4.2),
                           layout="constrained")
    for i, run in enumerate(runs):
        g = table[table.run == run].set_index("name").reindex(names)
        first = table[table.run == run].iloc[0]
        score = f"CORE {first.overall:.3f}" if kind == "core" else f"{first.overall:.1%} overall"
        x = np.arange(len(names)) + (i - (len(runs) - 1) / 2) * width
        ax.bar(x, g.value, width, yerr=[g.value - g.low, g.high - g.value], capsize=2, color=f"C{i % 10}",
               hatch=(None, "//", "..", "xx")[i // 10 % 4],  # the colours repeat after 10 runs; the hatch tells them apart
               error_kw=dict(lw=0.8), label=f"{run}, step {first.step}: {score}", gid=f"bars:{run}")
    chance = 0.0 if kind == "core" else 0.5
    ax.axhline(chance, color="gray", ls="--", lw=1, gid="chance",
               label="chance (the task's random baseline)" if kind == "core" else "chance (50%)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("centered accuracy" if kind == "core" else "accuracy")
    ax.set_title("CORE tasks: centered accuracy, 95% intervals" if kind == "core"
                 else "grammar probes: share of pairs where the grammatical sentence is likelier, 95% intervals")
    if kind == "probes":
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig
