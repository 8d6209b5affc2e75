"""Training runs on disk: find them, load their metrics into pandas, summarize, plot from the CLI.

A run is a directory holding config.json (written at the start, rewritten on resume) and metrics.jsonl
(appended to while it trains: one JSON object per line, `kind` = train | eval | sample).
Runs live in $TINYLAB_HOME/runs/<run>/; the repository's docs/runs/<run>/ holds a few
published runs (real GPU curves) so the notebooks can show them on any machine.

Reading is built for a run that is still being written: a partial last line (the trainer
is mid-write) is skipped silently, while a bad line anywhere else is an error that names the
file and line, because it means the file was damaged and a silent skip would hide lost data.

    python -m tinylab.runs list
    python -m tinylab.runs plot RUN [RUN ...] -o curves.png [--x tokens] [--logx] [--logy]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pandas as pd

from . import paths

FORMAT = 1  # the config.json "format" this reader understands
KINDS = ("train", "eval", "sample")  # other kinds are skipped (newer writers may add some)
METRIC_COLUMNS = ["kind", "step", "tokens", "flops", "loss", "lr", "tok_per_s", "mfu", "mem_gb",
                  "elapsed", "val_bpb", "text"]
CONFIG_COLUMNS = ["run", "label", "preset", "depth", "model_dim", "n_head", "n_kv_head", "vocab_size",
                  "sequence_len", "tie_embeddings", "params", "flops_per_token", "tokens_per_step",
                  "num_iterations"]
DOCS_RUNS = paths.REPO / "docs" / "runs"


class RunError(ValueError):
    """A run that cannot be found or read; the message names the run and what to do."""


class MetricsWarning(UserWarning):
    """A run that has no metrics yet (it just started, or died before logging)."""


# ---------------------------------------------------------------------------------------------
# finding runs

def run_roots() -> list[Path]:
    """Where runs are looked for, in order: $TINYLAB_HOME/runs, then the repo's docs/runs."""
    return [paths.runs_dir()] + ([DOCS_RUNS] if DOCS_RUNS.is_dir() else [])


def find_runs() -> dict[str, Path]:
    """Every run directory (one holding config.json or metrics.jsonl), by name.

    A name in docs/runs that also exists in TINYLAB_HOME is listed as "docs/runs/<name>"."""
    found: dict[str, Path] = {}
    for root in run_roots():
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            if (d / "config.json").exists() or (d / "metrics.jsonl").exists():
                found[d.name if d.name not in found else f"docs/runs/{d.name}"] = d
    return found


def published_runs() -> dict[str, Path]:
    """The runs shipped in the repository's docs/runs/ (real GPU curves), by name."""
    return {name: d for name, d in find_runs().items() if d.parent == DOCS_RUNS}


def resolve_run(run: str | Path) -> Path:
    """A run name (any key of find_runs(), or a directory in run_roots()) or a path to a run directory."""
    found = find_runs().get(str(run))
    if found is not None:  # first: "docs/runs/<name>" names a published run, not a path relative to the cwd
        return found
    p = Path(run).expanduser()
    if p.is_dir():
        return p
    for root in run_roots():
        if (root / str(run)).is_dir():
            return root / str(run)
    known = ", ".join(find_runs()) or "none yet"
    raise RunError(f"no run {str(run)!r} in {' or '.join(map(str, run_roots()))} (runs found: {known}); "
                   f"pass a run name or the path of a run directory, or train it with `python -m tinylab.train`")


# ---------------------------------------------------------------------------------------------
# reading one run

def load_config(run: str | Path) -> dict:
    """config.json of a run, checked to be in a format this tinylab reads."""
    d = resolve_run(run)
    f = d / "config.json"
    if not f.exists():
        raise RunError(f"run {d.name!r} ({d}) has no config.json: it was not written by tinylab's trainer, "
                       f"or it was cut off before starting; delete the directory and train it again")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{f} is not valid JSON ({e}); restore it or delete the run {d.name!r}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read {f} ({e}); check its permissions, restore it or delete the run {d.name!r}") from e
    fmt = cfg.get("format") if isinstance(cfg, dict) else None
    if fmt is None:
        raise RunError(f"run {d.name!r} ({d}) has no 'format' in config.json: it comes from an older tinylab "
                       f"whose metrics this version cannot read; train it again (or delete it)")
    if fmt != FORMAT:
        raise RunError(f"run {d.name!r} ({d}) has config format {fmt!r}, but this tinylab reads format {FORMAT}: "
                       f"update tinylab (git pull) to read it, or train the run again with this version")
    return cfg


def read_jsonl(path: Path) -> list[dict]:
    """JSON objects of a .jsonl file; a partial last line (writer mid-line) is skipped silently.

    A line that does not parse is only "partial" when it is the last one and has no newline
    yet; anywhere else it is damage and raises RunError with its line number."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")  # a complete file ends with "\n", so the last item is ""
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # unterminated last line: still being written
                break
            raise RunError(f"{path}, line {i} is not valid JSON ({e.msg}): the file is damaged; "
                           f"delete that line (the rest of the run is kept) and load again") from None
        if not isinstance(obj, dict):
            raise RunError(f"{path}, line {i} is not a JSON object: the file is damaged; delete that line")
        records.append(obj)
    return records


def run_label(cfg: dict) -> str:
    """Legend text from the config, e.g. "smoke · d2 · 64w · 0.16M"."""
    m = cfg.get("model", {})
    parts = [str(cfg.get("run", "?"))]
    if "depth" in m:
        parts.append(f"d{m['depth']}")
    if "model_dim" in m:
        parts.append(f"{m['model_dim']}w")
    if cfg.get("params"):
        parts.append(f"{cfg['params'] / 1e6:.2f}M")
    return " · ".join(parts)


def config_columns(cfg: dict, name: str) -> dict:
    """The per-run constants that ride along on every row (so concatenated frames stay plottable)."""
    m, t = cfg.get("model", {}), cfg.get("train", {})
    return dict(run=name, label=run_label({**cfg, "run": name}), preset=cfg.get("preset"),
                **{k: m.get(k) for k in ("depth", "model_dim", "n_head", "n_kv_head", "vocab_size",
                                         "sequence_len", "tie_embeddings")},
                params=cfg.get("params"), flops_per_token=cfg.get("flops_per_token"),
                tokens_per_step=t.get("total_batch_size"), num_iterations=t.get("num_iterations"))


def load_run(run: str | Path) -> pd.DataFrame:
    """One run's metrics as a DataFrame: METRIC_COLUMNS + CONFIG_COLUMNS, rows in file order.

    A run without metrics.jsonl (just started) gives an empty frame and a MetricsWarning, so
    a notebook comparing several runs keeps working. The full config is in df.attrs["config"]."""
    d = resolve_run(run)
    cfg = load_config(d)
    name = str(run) if str(run) in find_runs() or not Path(run).expanduser().is_dir() else d.name
    f = d / "metrics.jsonl"
    if f.exists():
        records = [r for r in read_jsonl(f) if r.get("kind") in KINDS]
    else:
        warnings.warn(f"run {name!r} has no metrics.jsonl yet ({f}): it has not logged a step; "
                      f"showing it empty", MetricsWarning, stacklevel=2)
        records = []
    df = pd.DataFrame.from_records(records, columns=None).reindex(columns=METRIC_COLUMNS)
    for col, value in config_columns(cfg, name).items():
        df[col] = value
    df.attrs.update(config=cfg, path=str(d), labels={name: run_label({**cfg, "run": name})})
    return df


def load_runs(runs=None) -> pd.DataFrame:
    """Several runs in one long frame (tell them apart by the `run` column); None: all found.

    df.attrs holds "labels" and "configs" (run -> legend label / full config.json), which also
    keeps runs that have no rows yet visible to plot_runs."""
    runs = list(find_runs()) if runs is None else list(runs)
    if not runs:
        raise RunError(f"no runs to load in {' or '.join(map(str, run_roots()))}; "
                       f"train one with `python -m tinylab.train`")
    with warnings.catch_warnings():
        warnings.simplefilter("always", MetricsWarning)
        frames = [load_run(r) for r in runs]
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
        tr, ev = g[g.kind == "train"], g[g.kind == "eval"].dropna(subset=["val_bpb"])
        first = g.iloc[0]
        tokens = tr.tokens.max() if len(tr) else float("nan")
        rows.append(dict(run=name, label=first.label, params=first.params,
                         steps=int(g.step.max()) if g.step.notna().any() else 0,  # evals log the last step
                         tokens=int(tokens) if tokens == tokens else 0,
                         tokens_per_param=round(tokens / first.params, 2) if first.params and len(tr) else None,
                         val_bpb=ev.val_bpb.iloc[-1] if len(ev) else None,
                         tok_per_s=tr.tok_per_s.median() if len(tr) else None,
                         elapsed_s=tr.elapsed.max() if len(tr) else None))
    return pd.DataFrame(rows).set_index("run")


def list_runs() -> pd.DataFrame:
    """Every run found, one row each; a run that cannot be read says why in `problem`."""
    rows = []
    for name, d in find_runs().items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetricsWarning)
                df = load_run(d).assign(run=name)
        except RunError as e:
            rows.append(dict(run=name, status="unreadable", path=str(d), problem=str(e)))
            continue
        cfg = df.attrs["config"]
        s = summarize(df).iloc[0].to_dict() if len(df) else {}
        n = cfg.get("train", {}).get("num_iterations")
        status = ("no metrics" if not s else "done" if n and s["steps"] >= n else f"step {s['steps']}/{n or '?'}")
        rows.append(dict(run=name, label=run_label({**cfg, "run": name}), status=status, params=cfg.get("params"),
                         steps=s.get("steps"), tokens=s.get("tokens"), val_bpb=s.get("val_bpb"),
                         tok_per_s=s.get("tok_per_s"), path=str(d), problem=""))
    cols = ["run", "label", "status", "params", "steps", "tokens", "val_bpb", "tok_per_s", "path", "problem"]
    return pd.DataFrame(rows, columns=cols).set_index("run")


# ---------------------------------------------------------------------------------------------
# CLI

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinylab.runs", description=__doc__.split("\n")[0])
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
    try:
        if args.cmd == "list":
            table = list_runs()
            if table.empty:
                print(f"no runs in {' or '.join(map(str, run_roots()))}")
            else:
                with pd.option_context("display.width", 200, "display.max_colwidth", 80):
                    print(table.drop(columns=["path"]).to_string())
            return 0
        from .plots import plot_runs, save_figure
        df = load_runs(args.runs)
        fig = plot_runs(df, x=args.x, logx=args.logx, logy=args.logy, smooth=args.smooth)
        out = save_figure(fig, args.output)
        print(f"wrote {out}")
        return 0
    except (RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
