"""Evaluating checkpoints: the CLI and evaluate(), their records and tables, records that survive a resume,
training's core_every / probes_every, bad input, and the bar charts."""
import csv
import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from tinylab import core, probes
from tinylab.errors import cli
from tinylab.eval import evaluate, main
from tinylab.evalplots import eval_table, plot_eval
from tinylab.plots import PlotError
from tinylab.probes import wilson
from tinylab.run import RECORDS, MetricsLog, Run
from tinylab.train import TrainError, train

FIXTURE = Path(__file__).parent / "fixtures" / "eval_bundle"
TINY = dict(device_batch_size=2, total_batch_size=256, eval_tokens=256, eval_every=2, sample_every=0, log_every=1)


def records(run: str, kind: str | None = None) -> list[dict]:
    return [r for r in Run.at(run).metrics.read() if kind is None or r["kind"] == kind]


@pytest.fixture(scope="module")
def run():
    """A finished 4-step smoke run (seconds; the session's tokenizer and token shards are reused)."""
    train("smoke", "ev-cli", num_iterations=4, progress=False, **TINY)
    return "ev-cli"


def snapshot(r: Run):
    """What an evaluation would change: the metrics log and the tables."""
    return r.metrics.path.read_bytes(), sorted(r.evals_dir.glob("*")) if r.evals_dir.is_dir() else []


def test_cli_records_each_evaluation_with_its_table(run, capsys):
    before = len(records(run))
    for argv in (["probes"], ["core", "--bundle", str(FIXTURE)], ["bpb"]):
        assert cli(main, [*argv, "--run", run, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "step 4: probes" in out and "step 4: CORE" in out and "step 4: val bpb" in out and "examples/s" in out
    new = records(run)[before:]
    assert [r["kind"] for r in new] == ["probes", "core", "eval"]
    for rec in new:  # exactly the schema, at the checkpoint's step and tokens
        assert list(rec) == ["kind", *RECORDS[rec["kind"]]] and rec["step"] == 4 and rec["tokens"] == 4 * 256
    probes_rec, core_rec, eval_rec = new
    assert eval_rec == records(run, "eval")[-2]  # training's evaluation at step 4: the same val batches, same bpb
    assert core_rec["n"] == 15 and list(core_rec["tasks"]) == ["mc_zeroshot", "mc_fewshot", "schema", "lm"]
    assert core_rec["max_per_task"] is None and sum(t["n"] for t in probes_rec["phenomena"].values()) == 1792
    tables = {p.name: list(csv.DictReader(open(p))) for p in Run.at(run).evals_dir.iterdir()}
    assert sorted(tables) == ["bpb-step_000004.csv", "core-step_000004.csv", "probes-step_000004.csv"]
    assert float(tables["core-step_000004.csv"][-1]["centered"]) == pytest.approx(core_rec["core"])
    assert {r["phenomenon"]: float(r["accuracy"]) for r in tables["probes-step_000004.csv"]} == \
        {k: v["accuracy"] for k, v in probes_rec["phenomena"].items()}


def test_evaluate_from_a_notebook_returns_the_result_and_can_write_nothing(run):
    before = snapshot(Run.at(run))
    result = evaluate(run, "core", bundle_dir=FIXTURE, max_per_task=2, write=False, progress=False)
    assert result.n == 8 and [t.n for t in result.tasks] == [2, 2, 2, 2] and snapshot(Run.at(run)) == before


def test_bpb_counts_the_tokens_it_scored_not_the_padding(run):
    """A pass of 5 rows at batch 2 ends in a batch padded with an ignored row: 5 × T tokens scored, not 6 × T."""
    from tinylab.checkpoint import load_model
    from tinylab.eval import val_bpb
    from tinylab.presets import get_preset

    model, tok, _ = load_model(run)
    cfg = get_preset("smoke").override(eval_tokens=5 * 128)
    padded, whole = (val_bpb(model, tok, cfg, device=torch.device("cpu"), batch_size=b, progress=False) for b in (2, 5))
    assert padded.n == whole.n == 5 * 128 and padded.val_bpb == pytest.approx(whole.val_bpb, rel=1e-5)


def crash_after(step: int):
    class Crash(Exception):
        pass

    def callback(rec):
        if rec["kind"] == "train" and rec["step"] == step:
            raise Crash
    return Crash, callback


def test_records_written_after_a_checkpoint_survive_resumes():
    """A crash leaves train lines after the checkpoint (step 2); an evaluation of that checkpoint is appended
    after them. The resume drops the stale train line and keeps the evaluation; so does a later resume of
    the finished run, with more steps."""
    Crash, callback = crash_after(3)
    with pytest.raises(Crash):
        train("smoke", "ev-resume", num_iterations=4, progress=False, callback=callback, **TINY)
    assert Run.at("ev-resume").latest_checkpoint().name == "step_000002"
    early = evaluate("ev-resume", "core", bundle_dir=FIXTURE, progress=False)  # logged after the train line of step 3
    assert [(r["kind"], r["step"]) for r in records("ev-resume")][-2:] == [("train", 3), ("core", 2)]
    train("smoke", "ev-resume", num_iterations=4, resume=True, progress=False, **TINY)
    late = evaluate("ev-resume", "core", bundle_dir=FIXTURE, progress=False)  # of the finished step 4
    train("smoke", "ev-resume", num_iterations=6, resume=True, progress=False, **TINY)
    kinds = [(r["kind"], r["step"]) for r in records("ev-resume") if r["kind"] in ("train", "core")]
    assert kinds == [("train", 1), ("train", 2), ("core", 2), ("train", 3), ("train", 4), ("core", 4),
                     ("train", 5), ("train", 6)]
    assert [r["tasks"] for r in records("ev-resume", "core")] == [early.record()["tasks"], late.record()["tasks"]]


def test_truncate_keeps_only_evaluations_of_the_checkpoint_step_or_earlier(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    lines = [dict(kind="train", step=1), dict(kind="train", step=2),                # before the offset
             dict(kind="train", step=3), dict(kind="probes", step=2), dict(kind="eval", step=2),
             dict(kind="core", step=3)]
    text = [json.dumps(x) + "\n" for x in lines]
    log.path.write_text("".join(text) + '{"kind": "train", "st')  # a partial last line
    offset = len("".join(text[:2]))
    log.truncate(offset, keep_through_step=2)
    assert log.read() == lines[:2] + lines[3:5]
    log.truncate(offset)  # a start from a checkpoint of nothing else: a plain cut
    assert log.read() == lines[:2] and log.size() == offset
    assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temp file left


def test_training_hook_off_changes_nothing_and_on_logs_at_its_steps(run, monkeypatch, capsys):
    """The same 4 steps as the fixture run (hooks off, the default), with CORE every 3 steps and the probes
    (16 pairs per phenomenon: this is about when they run) at the end only."""
    monkeypatch.setattr(core, "ensure_bundle", lambda: FIXTURE)  # offline: the fixture stands in for the bundle
    make_pairs = probes.make_pairs
    monkeypatch.setattr(probes, "make_pairs", lambda: make_pairs(16))
    stale = Run.at("ev-on").eval_csv("probes", 9)  # a table of an earlier attempt: a run started afresh drops it
    stale.parent.mkdir(parents=True)
    stale.write_text("phenomenon,n\n")
    capsys.readouterr()
    train("smoke", "ev-on", num_iterations=4, progress=False, core_every=3, probes_every=10, core_max_per_task=2,
          **TINY)
    assert not stale.parent.exists()
    out = capsys.readouterr().out
    assert out.count(": probes ") == 1 and out.count(": CORE ") == 2 and "pairs/s" in out and "examples/s" in out
    off, on = records(run), records("ev-on")
    for kind, value in (("train", "loss"), ("eval", "val_bpb")):  # evaluating does not touch training
        assert {r["step"]: r[value] for r in on if r["kind"] == kind} == {r["step"]: r[value] for r in off
                                                                           if r["kind"] == kind}
    assert [(r["step"], r["n"]) for r in on if r["kind"] == "probes"] == [(4, 7 * 16)]  # never step 0; the last
    assert [(r["step"], r["n"], r["max_per_task"]) for r in on if r["kind"] == "core"] == [(3, 8, 2), (4, 8, 2)]
    meta = json.loads((Run.at("ev-on").latest_checkpoint() / "checkpoint.json").read_text())
    assert meta["metrics_bytes"] == Run.at("ev-on").metrics.size()  # the step's records precede its checkpoint


def test_core_every_without_the_bundle_fails_before_anything_is_written(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(core, "default_bundle_dir", lambda: tmp_path / "eval_bundle")
    with pytest.raises(TrainError, match=r"core_every=5 needs CORE's eval bundle: cannot reach .* put it at .*"
                                         r"eval_bundle.zip.* Or train without CORE: core_every=0"):
        train("smoke", "ev-nobundle", num_iterations=5, progress=False, core_every=5, **TINY)
    assert not Run.at("ev-nobundle").exists()


def without_tokenizer(tmp_path, monkeypatch, run):
    """A copy of the run, in a home of its own, without its tokenizer (and no shared one to fall back to)."""
    shutil.copytree(Run.at(run).dir, tmp_path / "runs" / "notok", ignore=shutil.ignore_patterns("tokenizer"))
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    return "notok"


@pytest.mark.parametrize("argv, message", [
    (["probes", "--run", "ev-nope"], "no run 'ev-nope'"),
    (["probes", "--run", "{run}", "--step", "3"], "has no checkpoint at step 3; it has 4"),
    (["probes", "--checkpoint", "{ckpt}/../step_000009"], "no run"),
    (["rouge", "--run", "{run}"], "invalid choice: 'rouge'"),
    (["probes"], "one of the arguments --run --checkpoint is required"),
    (["probes", "--run", "{run}", "--max-per-task", "5"], "applies to core only"),
    (["probes", "--run", "{run}", "--bundle", "x"], "--bundle applies to core only"),
    (["core", "--run", "{run}", "--max-per-task", "0"], "max_per_task must be an integer of at least 1"),
    (["core", "--run", "{run}", "--max-per-task", "1", "--bundle", str(FIXTURE)], "raise max_per_task"),
    (["core", "--run", "{run}"], "put it at .*eval_bundle.zip"),  # offline, no bundle
    (["core", "--run", "{run}", "--bundle", "{tmp}"], "is not a CORE eval bundle"),
    (["probes", "--run", "{run}", "--device", "abacus"], "unknown device 'abacus'"),
    (["probes", "--run", "{run}", "--batch-size", "0"], "batch_size must be an integer of at least 1"),
    (["probes", "--run", "notok"], "has no tokenizer: neither its own copy"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, tmp_path, monkeypatch, capsys, argv, message):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(core, "default_bundle_dir", lambda: tmp_path / "eval_bundle")
    ckpt = Run.at(run).latest_checkpoint()
    target = Run.at(without_tokenizer(tmp_path, monkeypatch, run) if "notok" in argv else run)
    before = snapshot(target)
    capsys.readouterr()
    assert cli(main, [a.format(run=run, ckpt=ckpt, tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(message, err), err
    assert snapshot(target) == before


def write_records(root: Path, name: str, recs: list[dict]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def test_eval_table_and_bars(tmp_path):
    pairs = lambda acc: dict(n=256, accuracy=acc)  # noqa: E731
    a = write_records(tmp_path, "a", [dict(kind="probes", step=1, tokens=1, accuracy=0.5, n=512, seconds=1,
                                           phenomena=dict(x=pairs(0.5), y=pairs(0.5))),
                                      dict(kind="probes", step=9, tokens=9, accuracy=0.7, n=512, seconds=1,
                                           phenomena=dict(x=pairs(0.75), y=pairs(0.625)))])
    b = write_records(tmp_path, "b", [dict(kind="core", step=3, tokens=3, core=0.25, n=8, max_per_task=None,
                                           truncated=0, seconds=1, tasks=dict(mc=dict(n=8, accuracy=0.5, baseline=0.25,
                                                                                      centered=1 / 3)))])
    table = eval_table([a, b], "probes")
    assert table.attrs["missing"] == ["b"] and list(table.run) == ["a", "a"] and set(table.step) == {9}  # newest
    assert list(table.value) == [0.75, 0.625] and (table.low < table.value).all() and (table.value < table.high).all()
    core_table = eval_table([b], "core")  # centered: the accuracy and its interval mapped by (p - 0.25) / 0.75
    lo, hi = wilson(4, 8)
    assert core_table[["value", "low", "high"]].iloc[0].tolist() == pytest.approx([1 / 3, (lo - 0.25) / 0.75,
                                                                                    (hi - 0.25) / 0.75])
    for t, kind, chance, heights in ((table, "probes", 0.5, [0.75, 0.625]), (core_table, "core", 0.0, [1 / 3])):
        fig = plot_eval(t, kind)
        ax = fig.axes[0]
        assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_gid() == "chance"] == [chance]
        assert [p.get_height() for p in ax.patches if p.get_gid() == f"bars:{t.run[0]}"] == pytest.approx(heights)
        plt.close(fig)
    with pytest.raises(PlotError, match="no core records"):
        plot_eval(eval_table([a], "core"), "core")
    with pytest.raises(PlotError, match="kind must be 'core' or 'probes', got 'bpb'"):
        eval_table([a], "bpb")



def test_plot_eval_refuses_a_kind_that_does_not_match_its_table(tmp_path):
    a = write_records(tmp_path, "a", [dict(kind="probes", step=1, tokens=1, accuracy=0.75, n=256, seconds=1,
                                           phenomena=dict(x=dict(n=256, accuracy=0.75)))])
    table = eval_table([a], "probes")
    assert table.attrs["kind"] == "probes"
    with pytest.raises(PlotError, match=r"this table holds probes results .*but kind is 'core': call "
                                        r"plot_eval\(table, 'probes'\)"):
        plot_eval(table, "core")  # was drawn as CORE: accuracies as centered scores, chance at 0
    with pytest.raises(PlotError, match=r"holds core results .*but kind is 'probes'"):
        plot_eval(eval_table([a], "core"), "probes")  # an empty core table said "no probes records"
    for kind, hint in (("bpb", "plot_runs"), ("CORE", ""), (None, ""), (["core"], "")):
        with pytest.raises(PlotError, match=rf"kind must be 'core' or 'probes', got {re.escape(repr(kind))}.*{hint}"):
            plot_eval(table, kind)
    with pytest.raises(PlotError, match=r"kind must be 'core' or 'probes', got \['probes'\]"):
        eval_table([a], ["probes"])  # unhashable: was a TypeError
    with pytest.raises(PlotError, match=r"plot_eval draws a table, got list: pass eval_table\(runs, 'probes'\)"):
        plot_eval([a], "probes")
    bare = table.copy()
    bare.attrs.clear()  # a table without its kind (built by hand) is taken as given
    plt.close(plot_eval(bare, "probes"))


@pytest.mark.parametrize("kwargs", [dict(step="3"), dict(step=3.0), dict(batch_size="8"), dict(batch_size=8.5),
                                    dict(batch_size=0), dict(step=-1), dict(batch_size=True)])
def test_evaluate_refuses_arguments_that_are_not_whole_numbers_before_loading_anything(kwargs):
    from tinylab.eval import EvalError, evaluate

    with pytest.raises(EvalError, match="must be an integer of at least"):
        evaluate("no-such-run", "probes", **kwargs)  # refused before the run is even looked up


def test_a_run_given_twice_is_one_group_of_bars_and_runs_of_one_name_stay_apart(tmp_path):
    rec = lambda acc: dict(kind="probes", step=2, tokens=2, accuracy=acc, n=256, seconds=1,  # noqa: E731
                           phenomena=dict(x=dict(n=256, accuracy=acc)))
    one, two = write_records(tmp_path / "h", "R", [rec(0.75)]), write_records(tmp_path / "h2", "R", [rec(0.5)])
    table = eval_table([one, one], "probes")
    assert list(table.run) == ["R"]
    plt.close(plot_eval(table, "probes"))  # pandas refused to reindex a run's duplicated rows
    table = eval_table([one, two], "probes")
    assert list(table.run) == ["h/R", "h2/R"] and list(table.accuracy) == [0.75, 0.5]
    ax = plot_eval(table, "probes").axes[0]
    assert {p.get_gid() for p in ax.patches} == {"bars:h/R", "bars:h2/R"}
    plt.close(ax.figure)
