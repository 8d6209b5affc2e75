"""Runs as data: load their metrics into pandas, summarize them, plot them from the CLI.

Where runs live and how they are found is tinylab.run's business (one rule for everything);
this module reads what they hold. Reading is built for a run that is still being written: a
partial last line of metrics.jsonl (the trainer is mid-write) is skipped silently, while a bad
line anywhere else is an error that names the file and line, because it means the file was
damaged and a silent skip would hide lost data.

    python -m tinylab.runs list
    python -m tinylab.runs plot RUN [RUN ...] -o curves.png [--x tokens] [--logx] [--logy]
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from . import run as run_module
from .config import knob_names
from .errors import ArgumentParser, cli
from .run import DOCS_RUNS, RECORDS, Run, RunError, distinct_runs, read_jsonl  # noqa: F401 (re-exported for notebooks)

KINDS = tuple(RECORDS)  # other kinds are skipped (newer writers may add some)
METRIC_COLUMNS = ["kind", *dict.fromkeys(f for fields in RECORDS.values() for f in fields)]
DERIVED_COLUMNS = ["params", "flops_per_token", "tokens_per_step", "planned_steps"]
CONFIG_COLUMNS = ["run", "label", "preset", *knob_names(), *DERIVED_COLUMNS]


class MetricsWarning(UserWarning):
    """A run that has no metrics yet (it just started, or died before logging)."""


def find_runs() -> dict[str, Path]:
    """Every run directory found (tinylab.run.Run.all), by name."""
    return {name: run.dir for name, run in Run.all().items()}


def published_runs() -> dict[str, Path]:
    """The runs shipped in the repository's docs/runs/ (real GPU curves), by name; the points of
    published sweeps (docs/sweeps/) are read through tinylab.sweeps."""
    return {name: run.dir for name, run in Run.all().items() if run.published and
            run.dir.parent.resolve() == run_module.DOCS_RUNS.resolve()}


def load_config(run) -> dict:
    """config.json of a run (tinylab.run.Run.read_config)."""
    return Run.find(run).read_config()


def run_label(cfg: dict) -> str:
    """Legend text from the config, e.g. "smoke · d2 · 64w · 0.16M"."""
    m = cfg.get("model", {})
    parts = [str(cfg.get("run", "?"))]
    if "depth" in m:
        parts.append(f"d{m['depth']}")
    if "model_dim" in m:
        parts.append(f"{m['model_dim']}w")
    params = cfg.get("derived", {}).get("params")
    if params:
        parts.append(f"{params / 1e6:.2f}M")
    return " · ".join(parts)


def config_columns(cfg: dict, name: str) -> dict:
    """The per-run constants that ride along on every row (so concatenated frames stay plottable):
    every knob (tinylab.config's table) and what the trainer derived from them."""
    knobs = {k: v for g, section in cfg.items() if isinstance(section, dict) and g != "derived"
             for k, v in section.items()}
    derived = cfg.get("derived", {})
    return dict(run=name, label=run_label({**cfg, "run": name}), preset=cfg.get("preset"),
                **{k: knobs.get(k) for k in knob_names()},
                params=derived.get("params"), flops_per_token=derived.get("flops_per_token"),
                tokens_per_step=derived.get("total_batch_size"), planned_steps=derived.get("num_iterations"))


def load_run(run) -> pd.DataFrame:
    """One run's metrics as a DataFrame: METRIC_COLUMNS + CONFIG_COLUMNS, rows in file order.

    A run without metrics.jsonl (just started) gives an empty frame and a MetricsWarning, so
    a notebook comparing several runs keeps working. The full config is in df.attrs["config"]."""
    r = Run.find(run)
    cfg = r.read_config()
    name = r.name
    if r.metrics.path.exists():
        records = [rec for rec in r.metrics.read() if rec.get("kind") in KINDS]
    else:
        warnings.warn(f"run {name!r} has no metrics.jsonl yet ({r.metrics.path}): it has not logged a step; "
                      f"showing it empty", MetricsWarning, stacklevel=2)
        records = []
    df = pd.DataFrame.from_records(records, columns=None).reindex(columns=METRIC_COLUMNS)
    for col, value in config_columns(cfg, name).items():
        df[col] = value
    df.attrs.update(config=cfg, path=str(r.dir), labels={name: run_label({**cfg, "run": name})})
    return df


def as_list(runs) -> list:
    """Runs given as one (a name, a path or a Run) or as several, as a list: one name is one run, not its characters."""
    return [runs] if isinstance(runs, (str, os.PathLike, Run)) else list(runs)


def no_runs() -> RunError:
    """The error for an empty choice of runs: where they were looked for, and how to make one."""
    return RunError(f"no runs to load in {' or '.join(map(str, Run.roots()))}; "
                    f"train one with `python -m tinylab.train`")


def load_runs(runs=None) -> pd.DataFrame:
    """Several runs in one long frame (tell them apart by the `run` column); None: all found.

    Each run is loaded once, and two runs of one name from different directories are named apart by their
    paths (tinylab.run.distinct_runs), so a `run` is always one run's rows. df.attrs holds "labels" and
    "configs" (run -> legend label / full config.json), which also keeps runs that have no rows yet visible
    to plot_runs."""
    runs = list(Run.all()) if runs is None else as_list(runs)
    if not runs:
        raise no_runs()
    with warnings.catch_warnings():
        warnings.simplefilter("always", MetricsWarning)
        frames = [load_run(r) for r in distinct_runs(runs)]
    if len(frames) == 1:
        return frames[0]
    df = pd.concat(frames, ignore_index=True)
    df.attrs = dict(labels={k: v for f in frames for k, v in f.attrs["labels"].items()},
                    configs={k: f.attrs["config"] for f in frames for k in f.attrs["labels"]})
    return df


# ---------------------------------------------------------------------------------------------
# tables

def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: size, how far it got, final val bpb and typical throughput.

    tok/s is the median over train steps, which drops the slow first (compile) steps."""
    rows = []
    for name, g in df.groupby("run", sort=False):
        tr, ev = g[g.kind == "train"], g[g.kind == "eval"]  # the last evaluation as it was, NaN if it diverged
        first = g.iloc[0]
        tokens = g.tokens.max() if "tokens" in g else float("nan")  # evaluations count them too (an imported run)
        rows.append(dict(run=name, label=first.label, params=first.params,
                         steps=int(g.step.max()) if g.step.notna().any() else 0,  # evals log the last step
                         tokens=int(tokens) if tokens == tokens else 0,
                         tokens_per_param=round(tokens / first.params, 2) if first.params and tokens == tokens else None,
                         val_bpb=ev.val_bpb.iloc[-1] if len(ev) and "val_bpb" in ev else None,
                         tok_per_s=tr.tok_per_s.median() if len(tr) else None,
                         elapsed_s=tr.elapsed.max() if len(tr) else None))
    return pd.DataFrame(rows).set_index("run")


def list_runs() -> pd.DataFrame:
    """Every run found, one row each; a run that cannot be read says why in `problem`."""
    rows = []
    for name, r in Run.all().items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetricsWarning)
                df = load_run(r).assign(run=name)
        except RunError as e:
            rows.append(dict(run=name, status="unreadable", path=str(r.dir), problem=str(e)))
            continue
        cfg = df.attrs["config"]
        s = summarize(df).iloc[0].to_dict() if len(df) else {}
        n = cfg.get("derived", {}).get("num_iterations")
        status = ("no metrics" if not s else "done" if n and s["steps"] >= n else f"step {s['steps']}/{n or '?'}")
        rows.append(dict(run=name, label=run_label({**cfg, "run": name}), status=status,
                         params=cfg.get("derived", {}).get("params"), steps=s.get("steps"), tokens=s.get("tokens"),
                         val_bpb=s.get("val_bpb"), tok_per_s=s.get("tok_per_s"), path=str(r.dir), problem=""))
    cols = ["run", "label", "status", "params", "steps", "tokens", "val_bpb", "tok_per_s", "path", "problem"]
    return pd.DataFrame(rows, columns=cols).set_index("run")


# ---------------------------------------------------------------------------------------------
# CLI

def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m tinylab.runs", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="table of the runs in $TINYLAB_HOME/runs and docs/runs")
    p = sub.add_parser("plot", help="loss / val bpb / LR / throughput curves of runs, overlaid, to a PNG")
    p.add_argument("runs", nargs="+", help="run names or run directories")
    p.add_argument("-o", "--output", default="curves.png", help="image file to write (default curves.png)")
    p.add_argument("--x", default="step", choices=["step", "tokens", "flops", "elapsed"], help="x axis")
    p.add_argument("--logx", action="store_true", help="log-scale x axis")
    p.add_argument("--logy", action="store_true", help="log-scale loss and bpb axes")
    p.add_argument("--smooth", type=float, default=None, help="EMA coefficient in [0, 1) (default: from run length)")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        table = list_runs()
        if table.empty:
            print(f"no runs in {' or '.join(map(str, Run.roots()))}")
        else:
            with pd.option_context("display.width", 200, "display.max_colwidth", 80):
                print(table.drop(columns=["path"]).to_string())
        return 0
    from .plots import plot_runs, save_figure
    fig = plot_runs(load_runs(args.runs), x=args.x, logx=args.logx, logy=args.logy, smooth=args.smooth)
    print(f"wrote {save_figure(fig, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
