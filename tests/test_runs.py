"""Run loading (partial lines, missing files, old formats, mixed configs), plots and the CLI.

Runs are synthetic: written here in the trainer's on-disk format (common brief, helper D),
so these tests do not depend on training."""
import json
import math
import re
import warnings

import numpy as np
import pytest

from tinylab import run as run_mod
from tinylab import runs as R
from tinylab.calc import flops_per_token, param_counts
from tinylab.config import GPTConfig
from tinylab.errors import cli
from tinylab.run import Run
from tinylab.plots import PlotError, chinchilla_tokens, ema, plot_runs, save_figure, to_x


def write_run(root, name, *, model_dim=64, steps=60, eval_every=20, tokens_per_step=2048, fmt=2,
              complete=True, partial=None):
    """A run directory like tinylab.train writes: config.json + metrics.jsonl (format 2, or 1 of older versions)."""
    model = GPTConfig(depth=2, model_dim=model_dim, head_dim=32, vocab_size=512, sequence_len=128)
    counts = dict(params=param_counts(model)["total"], flops_per_token=flops_per_token(model))
    cfg = dict(run=name, preset="smoke", model=model.to_dict(), tokenizer=dict(name="sample-512", hash="abc"),
               device="cpu", world_size=1, created="2026-01-01")
    if fmt == 1:
        cfg.update(train=dict(total_batch_size=tokens_per_step, num_iterations=steps, device_batch_size=8,
                              requested_total_batch_size=tokens_per_step, grad_accum=2), corpus="sample", **counts)
    else:
        cfg.update(batch=dict(device_batch_size=8, total_batch_size=tokens_per_step), loop=dict(num_iterations=steps),
                   derived=dict(counts, total_batch_size=tokens_per_step, num_iterations=steps, grad_accum=2))
    if fmt is not None:
        cfg["format"] = fmt
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    lines = []
    for s in range(0, steps + 1):  # like the trainer: eval at step 0 (the untrained model), then train lines
        tok = s * tokens_per_step
        if s % eval_every == 0:
            lines.append(dict(kind="eval", step=s, tokens=tok, flops=0, val_bpb=3 - s / steps, elapsed=0.5 * s))
        if s == 0:
            continue
        lines.append(dict(kind="train", step=s, tokens=tok, flops=tok * counts["flops_per_token"],
                          loss=2 + 4 * math.exp(-s / 15) + 0.1 * rng.standard_normal(), lr=min(1, s / 10),
                          tok_per_s=1000.0 + s, mfu=0.1, mem_gb=0.1, elapsed=0.5 * s))
    lines.append(dict(kind="sample", step=steps, text="hello"))
    lines.append(dict(kind="future-kind", step=steps))  # readers skip kinds they don't know
    text = "".join(json.dumps(r) + "\n" for r in lines) if complete else ""
    (d / "metrics.jsonl").write_text(text + (partial or ""))
    return d


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    monkeypatch.setattr(run_mod, "DOCS_RUNS", tmp_path / "no-docs")
    monkeypatch.setattr(run_mod, "DOCS_SWEEPS", tmp_path / "no-sweeps")
    return tmp_path / "runs"


@pytest.mark.parametrize("fmt", [1, 2])
def test_load_run_rows_and_config_columns(home, fmt):
    write_run(home, "a", steps=60, eval_every=20, fmt=fmt)
    df = R.load_run("a")
    assert (df.kind == "train").sum() == 60 and (df.kind == "eval").sum() == 4
    assert set(df.kind) == {"train", "eval", "sample"}  # unknown kinds dropped
    assert df.params.unique().tolist() == [param_counts(GPTConfig(depth=2, model_dim=64, head_dim=32,
                                                                   vocab_size=512, sequence_len=128))["total"]]
    assert (df.tokens_per_step == 2048).all() and (df.run == "a").all()
    assert (df.planned_steps == 60).all() and (df.device_batch_size == 8).all()  # every knob is a column
    assert df.label.iloc[0] == "a · d2 · 64w · 0.16M"
    assert df.attrs["config"]["format"] == 2  # format 1 is read in today's layout


def test_partial_last_line_is_ignored_silently(home):
    write_run(home, "a", steps=30, eval_every=10, partial='{"kind": "train", "step": 31, "lo')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = R.load_run("a")
    assert df[df.kind == "train"].step.max() == 30


def test_corrupt_middle_line_names_line(home):
    d = write_run(home, "a", steps=5, eval_every=10)
    lines = (d / "metrics.jsonl").read_text().split("\n")
    lines[2] = lines[2][:10]  # damaged, but followed by more lines
    (d / "metrics.jsonl").write_text("\n".join(lines))
    with pytest.raises(R.RunError, match=r"line 3 is not valid JSON"):
        R.load_run("a")


def test_corrupt_last_line_with_newline_is_an_error(home):
    d = write_run(home, "a", steps=5, eval_every=10, partial='{"kind": "tr\n')
    with pytest.raises(R.RunError, match=r"line 9 "):  # eval + 5 train + sample + future-kind + bad
        R.load_run(d)


def test_missing_metrics_gives_empty_frame_and_warning(home):
    d = write_run(home, "a")
    (d / "metrics.jsonl").unlink()
    with pytest.warns(R.MetricsWarning, match="no metrics.jsonl"):
        df = R.load_run("a")
    assert df.empty and set(R.METRIC_COLUMNS + R.CONFIG_COLUMNS) <= set(df.columns)


@pytest.mark.parametrize("fmt, match", [(None, "older tinylab"), (3, "format 3.*reads formats 1 and 2")])
def test_old_or_unknown_format_is_refused(home, fmt, match):
    write_run(home, "old", fmt=fmt)
    with pytest.raises(R.RunError, match=f"run 'old'.*{match}"):
        R.load_run("old")


def test_missing_run_lists_known_runs(home):
    write_run(home, "a")
    with pytest.raises(R.RunError, match=r"no run 'b'.*runs found: a"):
        R.load_run("b")


def test_mixed_configs_and_path_runs(home, tmp_path):
    write_run(home, "narrow", model_dim=32, steps=40)
    elsewhere = write_run(tmp_path / "docs", "wide", model_dim=64, steps=60)
    df = R.load_runs(["narrow", elsewhere])
    per_run = df.groupby("run").agg(model_dim=("model_dim", "first"), steps=("step", "max"), params=("params", "first"))
    assert per_run.loc["narrow", "model_dim"] == 32 and per_run.loc["wide", "model_dim"] == 64
    assert per_run.loc["narrow", "steps"] == 40 and per_run.loc["wide", "steps"] == 60
    assert per_run.loc["narrow", "params"] < per_run.loc["wide", "params"]
    s = R.summarize(df)
    assert s.loc["wide", "tokens"] == 60 * 2048 and s.loc["narrow", "steps"] == 40
    assert s.loc["wide", "val_bpb"] == pytest.approx(2.0)  # last eval: 3 - 60/60
    assert s.loc["wide", "tokens_per_param"] == pytest.approx(60 * 2048 / s.loc["wide", "params"], abs=0.01)


def test_list_runs_includes_docs_runs_and_unreadable(home, tmp_path, monkeypatch):
    write_run(home, "a", steps=60)
    write_run(home, "old", fmt=None)
    write_run(tmp_path / "docs", "real", steps=30)
    monkeypatch.setattr(run_mod, "DOCS_RUNS", tmp_path / "docs")
    t = R.list_runs()
    assert list(t.index) == ["a", "old", "real"]
    assert t.loc["a", "status"] == "done" and t.loc["old", "status"] == "unreadable"
    assert "older tinylab" in t.loc["old", "problem"]
    assert Run.find("real").dir == tmp_path / "docs" / "real"


def test_ema_is_debiased_and_smooths():
    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5, 5, 5])  # no pull toward 0
    x = np.random.default_rng(0).standard_normal(500)
    assert ema(x, 0.9).std() < x.std() / 2
    assert ema(x, 0.0) == pytest.approx(x)


def lines_by_gid(ax, prefix):
    return sorted(ln.get_gid().split(":", 1)[1] for ln in ax.lines if (ln.get_gid() or "").startswith(prefix))


@pytest.mark.parametrize("x", ["step", "tokens", "flops", "elapsed"])
def test_plot_has_lines_per_run(home, x):
    write_run(home, "narrow", model_dim=32, steps=40)
    write_run(home, "wide", model_dim=64, steps=60)
    fig = plot_runs(R.load_runs(["narrow", "wide"]), x=x)
    ax = {a.get_label(): a for a in fig.axes}
    for prefix, panel in [("loss-raw:", "loss"), ("loss-smooth:", "loss"), ("val-bpb:", "val_bpb"),
                          ("lr:", "lr"), ("tok-per-s:", "tok_per_s")]:
        assert lines_by_gid(ax[panel], prefix) == ["narrow", "wide"], (prefix, panel)
    raw = next(ln for ln in ax["loss"].lines if ln.get_gid() == "loss-raw:wide")
    assert len(raw.get_xdata()) == 60
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(l.startswith("narrow · d2 · 32w") for l in labels) and any("wide · d2 · 64w" in l for l in labels)


def test_chinchilla_marker_position(home):
    # 20 × params tokens reached inside the run: a vertical line at that step in every panel
    d = write_run(home, "big", model_dim=32, steps=60, tokens_per_step=65536)
    df = R.load_run(d)
    params = df.params.iloc[0]
    fig = plot_runs(df, x="step")
    vlines = [ln for a in fig.axes for ln in a.lines if ln.get_gid() == "chinchilla:big"]
    assert len(vlines) == 4 and vlines[0].get_xdata()[0] == pytest.approx(20 * params / 65536)
    # a run stopping short of 20:1 gets a note instead of an axis stretched to it
    write_run(home, "short", model_dim=32, steps=10)
    fig = plot_runs(R.load_run("short"), x="tokens")
    assert not [ln for a in fig.axes for ln in a.lines if ln.get_gid() == "chinchilla:short"]
    assert [t for t in fig.axes[0].texts if t.get_gid() == "chinchilla:short"]
    assert fig.axes[0].get_xlim()[1] < 20 * params
    assert to_x(R.load_run("short"), chinchilla_tokens(R.load_run("short")), "elapsed") == pytest.approx(
        20 * params / 2048 * 0.5)  # 0.5 s per 2048-token step


def test_a_run_with_no_train_line_yet_plots_on_log_axes(home):
    write_run(home, "young")
    metrics = home / "young" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # only the step-0 evaluation so far
    fig = plot_runs(R.load_run("young"), logy=True)
    assert fig.axes[0].get_yscale() == "linear"  # no loss to log-scale yet
    assert not any(len(ln.get_ydata()) for ln in fig.axes[0].lines)
    fig.canvas.draw()  # matplotlib refuses a log axis with nothing positive on it


def test_one_run_name_is_one_run_and_run_names_may_be_paths(home):
    from pathlib import Path

    write_run(home, "a")
    assert R.load_runs("a")["run"].unique().tolist() == ["a"]  # not the runs 'a'... of its characters
    assert run_mod.Run.at(Path("b")).name == "b"
    with pytest.raises(run_mod.RunError, match="a run name is a string"):
        run_mod.Run.at(5)


def test_a_log_cut_short_of_the_checkpoint_loses_its_partial_line_not_the_next_record(tmp_path):
    log = run_mod.MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"kind": "eval", "step": 0}\n{"kind": "train", "st')  # a crash cut the second line
    log.truncate(200, keep_through_step=0)  # the checkpoint's offset lies beyond what is left
    assert log.path.read_text() == '{"kind": "eval", "step": 0}\n'


def test_summary_counts_evaluated_tokens_and_shows_a_diverged_evaluation(home, tmp_path):
    """An eval-only run (an imported one, evaluated) has tokens; a run whose last evaluation is NaN shows NaN,
    not the untrained step-0 value; a figure's folder that cannot be made is one PlotError."""
    d = write_run(home, "evonly", steps=40)
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["kind"] == "eval"))
    d = write_run(home, "diverged", steps=40)
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    lines[-3:] = [dict(kind="eval", step=40, tokens=40 * 2048, flops=0, val_bpb=float("nan"), elapsed=20.0)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    table = R.summarize(R.load_runs(["evonly", "diverged"]))
    assert table.loc["evonly", "tokens"] == 40 * 2048 and table.loc["evonly", "tokens_per_param"] > 0
    assert math.isnan(table.loc["diverged", "val_bpb"])
    (tmp_path / "file").write_text("")
    with pytest.raises(PlotError, match="cannot create the folder .*file"):
        save_figure(plot_runs(R.load_run("evonly")), tmp_path / "file" / "x.png")


def test_a_directory_inside_a_run_names_the_run_and_run_names_are_plain_words(home, tmp_path):
    write_run(home, "a")
    (home / "a" / "checkpoints").mkdir()
    with pytest.raises(run_mod.RunError, match=f"is a directory but not a run.*pass its run, {home / 'a'}$"):
        Run.find(home / "a" / "checkpoints" / ".")  # a path, so not looked up as the run name a/checkpoints
    with pytest.raises(run_mod.RunError, match="is a directory but not a run[^:]*$"):
        Run.find(tmp_path)
    for bad in ("my run", "a;b", "-a", "a/b c", "ü"):
        with pytest.raises(run_mod.RunError, match="not a usable run name"):
            Run.at(bad)
    assert Run.at("sweep/lr-1e+20_depth-4").name == "sweep/lr-1e+20_depth-4"  # a sweep point's name


def write_sweep(root, name, points=()):
    """A sweep directory as tinylab.sweep leaves it: spec.json, and a run per point."""
    (root / name).mkdir(parents=True)
    (root / name / run_mod.SWEEP_SPEC).write_text(json.dumps(dict(preset="smoke")))
    for p in points:
        write_run(root / name, p, steps=2, eval_every=10)
    return root / name


@pytest.mark.parametrize("text", ["./nope", "~/no-such-run-dir", "~no-such-user-tl/run", "/no/such/run", "a/b/c", "", "my run"])
def test_a_missing_path_is_not_offered_as_a_run_to_train(home, text):
    write_run(home, "a")
    with pytest.raises(run_mod.RunError, match=rf"no run {re.escape(repr(text))} .*\(runs found: a\)") as e:
        Run.find(text)
    assert "tinylab.train" not in str(e.value) and str(e.value).endswith("pass a run name or the path of a run directory")
    if text.startswith(("/", ".", "~")):
        assert "as a path: nothing at" in str(e.value)


def test_a_file_is_not_a_run_and_a_name_is_offered_to_train(home, tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(run_mod.RunError, match=r"as a path: .*notes.txt is a file, not a run directory; pass a run") as e:
        Run.find(tmp_path / "notes.txt")
    assert "tinylab.train" not in str(e.value)
    with pytest.raises(run_mod.RunError, match=r"no run 'nope' .*train it with `python -m tinylab.train --run nope`$"):
        Run.find("nope")
    for path_like in ("./a", "a/", "~a"):  # a path, not a name the trainer can make a run of
        assert not run_mod.is_run_name(path_like)
        with pytest.raises(run_mod.RunError, match="not a usable run name"):
            Run.at(path_like)
    assert run_mod.is_run_name("sweep/point-1e+20") and not run_mod.is_run_name("x" * 201)


def test_a_sweep_given_as_a_run_points_at_its_points_and_its_commands(home, tmp_path, monkeypatch):
    write_sweep(home, "sw", ["p1", "p2"])
    for text in ("sw", str(home / "sw")):  # by name or by path
        with pytest.raises(run_mod.RunError, match=rf"{re.escape(repr(text))} is a sweep .*not a run: pass one of its "
                                                   rf"points, '.*\(e.g. {re.escape(text)}/p1, {re.escape(text)}/p2\); "
                                                   r"see its points with `python -m tinylab.sweep sw --plan` and train "
                                                   r"them with `python -m tinylab.sweep sw`") as e:
            R.load_run(text)
        assert "tinylab.train" not in str(e.value)
    with pytest.raises(run_mod.RunError, match=r"no run 'sw/p3' .*; sw is a sweep: see its points with "
                                               r"`python -m tinylab.sweep sw --plan`") as e:
        Run.find("sw/p3")  # not `train --run sw/p3`: a stray run inside the sweep, outside its spec
    assert "tinylab.train" not in str(e.value)
    assert Run.find("sw/p1").name == "sw/p1"
    docs = tmp_path / "docs-sweeps"
    write_sweep(docs, "pub")
    monkeypatch.setattr(run_mod, "DOCS_SWEEPS", docs)
    with pytest.raises(run_mod.RunError, match=r"'pub' is a sweep .*\(none trained yet\); read its results with "
                                               r"tinylab.sweeps.load_sweep\('pub'\), or run it yourself with "
                                               r"`python -m tinylab.sweep NAME --spec .*pub/spec.json`"):
        Run.find("pub")


def test_no_checkpoint_says_how_to_train_the_run_where_it_is(home, tmp_path):
    write_run(home, "a")
    write_sweep(home, "sw", ["p1"])
    elsewhere, loose = write_run(tmp_path / "h2" / "runs", "R"), write_run(tmp_path / "loose", "R")
    expected = {"a": r"train it with `python -m tinylab.train --run a`$",
                "sw/p1": r"train it with its sweep, `python -m tinylab.sweep sw` \(`--plan`",
                elsewhere: rf"`TINYLAB_HOME={re.escape(str(tmp_path / 'h2'))} python -m tinylab.train --run R`$",
                loose: r"train a run of your own with `python -m tinylab.train --run NAME`"}
    for run, match in expected.items():
        with pytest.raises(run_mod.RunError, match=f"has no checkpoint yet .*{match}"):
            Run.find(run).checkpoint()
    (home / "a" / "checkpoints" / "step_000002").mkdir(parents=True)  # damaged: no checkpoint.json
    with pytest.raises(run_mod.RunError, match=r"delete it and train it with `python -m tinylab.train --run a --overwrite`"):
        Run.find("a").checkpoint()
    (elsewhere / "checkpoints" / "step_000002").mkdir(parents=True)
    with pytest.raises(run_mod.RunError, match=r"delete it and train it with `TINYLAB_HOME=.* --run R --overwrite`"):
        Run.find(elsewhere).checkpoint()


def test_a_transformers_export_is_not_a_run_but_a_damaged_run_still_is(home, tmp_path):
    # what only a run holds: metrics.jsonl, checkpoints/, or a config.json that is not a transformers model's
    write_run(home, "a")
    (home / "hf").mkdir()
    (home / "hf" / "config.json").write_text(json.dumps(dict(model_type="nanochat", vocab_size=512)))
    (home / "damaged").mkdir()
    (home / "damaged" / "config.json").write_text('{"run": "damaged", "mod')  # cut off: still a run, said so
    (home / "empty").mkdir()
    (home / "empty" / "config.json").write_text("{}")
    assert list(Run.all()) == ["a", "damaged", "empty"] and not Run(home / "hf").exists()
    with pytest.raises(run_mod.RunError, match="is a directory but not a run .*tinylab's config.json"):
        Run.find(home / "hf")
    with pytest.raises(run_mod.RunError, match="is not valid JSON.*restore it or delete the run 'damaged'"):
        Run.find("damaged").read_config()
    (home / "a" / "config.json").write_text(json.dumps(dict(model_type="nanochat")))
    assert Run.find("a").exists()  # its metrics.jsonl makes it a run whatever its config.json says


def test_plot_options_and_bad_input(home, tmp_path):
    write_run(home, "a")
    df = R.load_run("a")
    fig = plot_runs(df, x="tokens", logx=True, logy=True, smooth=0.5)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    bpb = next(ln for ln in fig.axes[1].lines if ln.get_gid() == "val-bpb:a")
    assert len(bpb.get_xdata()) == 3 and min(bpb.get_xdata()) > 0  # the step-0 eval has no place on a log axis
    assert "β=0.5" in fig.axes[0].get_title()
    with pytest.raises(PlotError, match="x must be one of"):
        plot_runs(df, x="time")
    with pytest.raises(PlotError, match=r"\[0, 1\)"):
        plot_runs(df, smooth=1.5)
    out = save_figure(fig, tmp_path / "f.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("smooth", ["0.5", True, False, float("nan"), float("inf"), 1.0, 1, -0.1, [0.5]])
def test_plot_refuses_a_smooth_that_is_not_a_coefficient(home, smooth):
    write_run(home, "a", steps=20, eval_every=10)
    with pytest.raises(PlotError, match=rf"smooth is an EMA coefficient: a number in \[0, 1\).*got {re.escape(repr(smooth))}"):
        plot_runs(R.load_run("a"), smooth=smooth)


@pytest.mark.parametrize("smooth", [0, 0.0, np.float32(0.5), np.float64(0.9)])
def test_plot_takes_any_real_coefficient(home, smooth):
    write_run(home, "a", steps=20, eval_every=10)
    assert f"β={float(smooth):.3g}" in plot_runs(R.load_run("a"), smooth=smooth).axes[0].get_title()


@pytest.mark.parametrize("x", ["time", "Step", ["step"], None])
def test_plot_refuses_an_unknown_x_axis(home, x):
    write_run(home, "a", steps=20, eval_every=10)
    with pytest.raises(PlotError, match=rf"x must be one of 'step', 'tokens', 'flops', 'elapsed', got {re.escape(repr(x))}"):
        plot_runs(R.load_run("a"), x=x)


def test_plot_run_without_metrics(home):
    d = write_run(home, "new")
    (d / "metrics.jsonl").unlink()
    write_run(home, "a")
    with pytest.warns(R.MetricsWarning):
        fig = plot_runs(R.load_runs(["a", "new"]))
    assert any("no metrics yet" in t.get_text() for t in fig.legends[0].get_texts())


def test_cli_list_and_plot(home, tmp_path, capsys):
    write_run(home, "a", model_dim=32)
    write_run(home, "b", model_dim=64)
    assert R.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "a · d2 · 32w" in out and "b · d2 · 64w" in out
    png = tmp_path / "out" / "curves.png"
    assert R.main(["plot", "a", "b", "-o", str(png), "--x", "tokens", "--logx"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli(R.main, ["plot", "a", "nope", "-o", str(png)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_published_run_shadowed_by_a_local_run_resolves(home, tmp_path, monkeypatch):
    write_run(home, "same", model_dim=32, steps=40)
    write_run(tmp_path / "docs", "same", model_dim=64, steps=60)
    monkeypatch.setattr(run_mod, "DOCS_RUNS", tmp_path / "docs")
    assert list(R.find_runs()) == ["same", "docs/runs/same"]
    for key, path in R.find_runs().items():  # every name find_runs (and the runs widget) offers loads
        assert Run.find(key).dir == path
    df = R.load_runs(list(R.find_runs()))
    assert df.groupby("run", sort=False).model_dim.first().to_dict() == {"same": 32, "docs/runs/same": 64}


@pytest.mark.parametrize("damage", ["binary", "unreadable"])
def test_unreadable_config_is_a_run_error(home, damage):
    f = write_run(home, "bad") / "config.json"
    if damage == "binary":
        f.write_bytes(b"\xff\xfe{")
    else:  # a directory where the file should be (unreadable on any user, even root): named, to be moved aside
        f.unlink()
        f.mkdir()
        (f / "x").write_text("")
    match = f"cannot read {f}" if damage == "binary" else f"{f} is a folder where tinylab keeps a file: move it aside"
    with pytest.raises(R.RunError, match=match):
        R.load_config("bad")


def test_widget_replots_and_reports_problems(home):
    from tinylab.widgets.runs import runs_view, show_runs
    write_run(home, "a", model_dim=32)
    write_run(home, "b", model_dim=64)
    write_run(home, "old", fmt=None)
    fig = show_runs(["a", "b"], x="tokens")
    assert lines_by_gid(fig.axes[0], "loss-smooth:") == ["a", "b"]
    view = runs_view(selected=["a"])
    (pick, controls), message, image = view.children[0].children, view.children[1], view.children[2]
    assert list(pick.options) == ["a", "b", "old"]
    first = image.value
    assert first[:4] == b"\x89PNG" and message.value == ""  # drawn on creation
    controls.children[0].value = "elapsed"  # the x-axis dropdown re-plots
    assert image.value[:4] == b"\x89PNG" and image.value != first
    pick.value = ("a", "old")  # an unreadable run: its message instead of a plot
    assert "older tinylab" in message.value and image.layout.display == "none"
    pick.value = ()
    assert "select at least one run" in message.value


def test_widget_takes_one_name_as_one_run(home):
    from tinylab.widgets.runs import runs_view
    write_run(home, "myrun", steps=20, eval_every=10)
    write_run(home, "other", steps=20, eval_every=10)
    view = runs_view(selected="myrun")  # not the runs 'm', 'y', 'r', ...
    pick = view.children[0].children[0]
    assert pick.value == ("myrun",) and view.children[2].value[:4] == b"\x89PNG"
    assert runs_view(selected="myrun", runs="myrun").children[0].children[0].options == ("myrun",)


@pytest.mark.parametrize("selected, runs, match", [
    (["nope"], None, r"selected run 'nope' is not among the runs to pick from \(a, b\): .*runs=\[\.\.\.\]"),
    (["a", "nope", "zz"], ["a"], r"selected runs 'nope', 'zz' are not among the runs to pick from \(a\)"),
    ("nope", ["a", "b"], r"selected run 'nope' is not"),
    (None, [], r"no runs to load in .*train one with `python -m tinylab.train`"),
])
def test_widget_refuses_a_selection_it_cannot_offer(home, selected, runs, match):
    from tinylab.widgets.runs import runs_view
    write_run(home, "a", steps=20, eval_every=10)
    write_run(home, "b", steps=20, eval_every=10)
    with pytest.raises(R.RunError, match=match):
        runs_view(selected=selected, runs=runs)


def test_widget_with_no_runs_at_all_and_a_long_list(home):
    from tinylab.widgets.runs import LISTED, runs_view
    with pytest.raises(R.RunError, match="no runs to load in"):
        runs_view()
    for i in range(LISTED + 3):
        write_run(home, f"r{i:02d}", steps=2, eval_every=10)
    with pytest.raises(R.RunError, match=rf"\(r00, .*, r{LISTED - 1:02d}, \.\.\. and 3 more\)"):
        runs_view(selected=["nope"])
    with pytest.raises(PlotError, match="x must be one of 'step', 'tokens', 'flops', 'elapsed', got 'time'"):
        runs_view(x="time")


def test_runs_of_one_name_stay_apart_and_one_run_given_twice_is_taken_once(home, tmp_path, capsys):
    write_run(home, "R", steps=20, eval_every=10)
    other = write_run(tmp_path / "h2" / "runs", "R", model_dim=32, steps=40, eval_every=10)
    df = R.load_runs(["R", other])
    assert df.run.unique().tolist() == [f"{home.parent.name}/runs/R", "h2/runs/R"]  # the shortest tails that differ
    first, second = df.run.unique()
    assert df[df.run == second].step.max() == 40 and (df[df.run == second].model_dim == 32).all()
    s = R.summarize(df)
    assert s.loc[first, "steps"] == 20 and s.loc[second, "steps"] == 40
    again = R.load_runs(["R", "R", home / "R"])  # one directory, named three ways: its rows once, not a zigzag
    assert again.run.unique().tolist() == ["R"] and (again.kind == "train").sum() == 20
    fig = plot_runs(df)
    ax = fig.axes[0]
    raw = {ln.get_gid(): list(ln.get_xdata()) for ln in ax.lines if ln.get_gid().startswith("loss-raw:")}
    assert raw == {f"loss-raw:{first}": list(range(1, 21)), f"loss-raw:{second}": list(range(1, 41))}
    with pytest.raises(PlotError, match="two frames hold a run named 'R'.*load_runs"):
        plot_runs([R.load_run("R"), R.load_run(other)])
    assert len(lines_by_gid(plot_runs([R.load_run("R"), R.load_run(home / "R")]).axes[0], "loss-raw:")) == 1
    assert cli(R.main, ["plot", "R", str(other), "-o", str(tmp_path / "x.png")]) == 0
    assert "wrote" in capsys.readouterr().out


def test_twelve_runs_get_twelve_looks(home):
    for i in range(12):
        write_run(home, f"r{i:02d}", steps=20, eval_every=10)
    ax = plot_runs(R.load_runs([f"r{i:02d}" for i in range(12)])).axes[0]
    looks = [(ln.get_color(), str(ln.get_linestyle())) for ln in ax.lines if ln.get_gid().startswith("loss-smooth:")]
    assert len(looks) == 12 and len(set(looks)) == 12  # colours repeat after 10 runs, the line style does not
