"""Sweeps: grid parsing and spec errors, budgets, invalid and failing points, resume, the results table,
the parallel launcher, the child command line, and published sweeps in docs/sweeps."""
import json
import shutil
import sys
import time

import pandas as pd
import pytest

from tinylab import calc, gpuqueue as Q, paths, run as run_mod, sweep as S, sweeps as SS, sweepspec as SP
from tinylab import train as train_mod
from tinylab.config import ConfigError
from tinylab.errors import cli
from tinylab.presets import get_preset, resolve
from tinylab.run import Run, all_sweeps, find_sweep
from tinylab.runs import published_runs
from tinylab.schedule import RunPlan

# the smoke model at its smallest: micro-batches of 2 × 128 tokens, 2 per step, an eval of 512 tokens
TINY = dict(device_batch_size=2, total_batch_size=512, eval_tokens=512, eval_every=4, sample_every=0, log_every=1)


class Kill(Exception):
    """Stands for Ctrl-C or a crash in the middle of a sweep."""


def fresh(*names):
    """Sweep names free to start (a TINYLAB_HOME kept from an earlier session may hold them)."""
    for name in names:
        shutil.rmtree(paths.home() / "runs" / name, ignore_errors=True)
    return names[0]


def spec(points=None, grid=None, budget=None, **knobs):
    return dict(preset="smoke", knobs={**TINY, **knobs}, grid=grid or {}, points=points or [],
                budget=budget or {"tokens": 4 * 512})


# ------------------------------------------------------------------------------- the spec

def test_grid_values_parse_by_the_knobs_declared_type():
    grid = SP.parse_grid(["tie_embeddings=false,True", "head_dim=64,128", "vocab_size=8192,24_576", "seq_len=256",
                         "n_kv_head=4,2", "matrix_lr=0.02,3e-2", "target_tokens=5e7", "preset=smoke,seed15m"])
    assert grid == dict(tie_embeddings=[False, True], head_dim=[64, 128], vocab_size=[8192, 24576],
                        sequence_len=[256], n_kv_head=[4, 2], matrix_lr=[0.02, 0.03], target_tokens=[50_000_000],
                        preset=["smoke", "seed15m"])
    assert [type(v) for v in grid["matrix_lr"] + grid["target_tokens"]] == [float, float, int]
    assert SP.parse_point(["depth=6", "model_dim=448"]) == dict(depth=6, model_dim=448)


@pytest.mark.parametrize("items, match", [
    (["seq_len=64", "sequence_len=128"], r"sets sequence_len twice \(seq_len and sequence_len\): give it once"),
    (["depth=1", "depth=2"], "sets depth twice: give it once"),
])
def test_a_point_that_sets_a_knob_twice_is_refused(items, match):
    with pytest.raises(SP.SweepError, match=match):  # it kept the last value: 64 vanished
        SP.parse_point(items)


@pytest.mark.parametrize("items, match", [
    (["head_dimm=64,128"], "unknown knob 'head_dimm' .did you mean head_dim"),
    (["head_dim=abc"], r"head_dim='abc': give head_dim an integer"),
    (["head_dim=1.5"], "give head_dim an integer"),
    (["n_kv_head=none,2"], "sets n_kv_head to none, which would leave the preset's value"),  # override's None
    (["tie_embeddings=maybe"], "give tie_embeddings True or False"),
    (["head_dim"], "is not KNOB=VALUE,VALUE"),
    (["head_dim=64,64"], "lists a value twice"),
    (["head_dim=-4"], "head_dim must be >= 1"),
    (["corpus=web"], "corpus must be one of sample, fineweb"),
    (["preset=smok"], "unknown preset 'smok'"),
    (["depth=2", "depth=3"], "the grid sets depth twice: give all its values in one"),
    (["seq_len=64", "sequence_len=128,256"], r"the grid sets sequence_len twice \(seq_len and sequence_len\)"),
])
def test_bad_grid_input_is_named(items, match):
    with pytest.raises(ConfigError, match=match):  # SweepError and the knobs' ConfigError share this root
        SP.parse_grid(items)


@pytest.mark.parametrize("d, match", [
    (dict(preset="smoke", grids={}), r"unknown spec key\(s\) \['grids'\]"),
    (dict(knobs={}), "names no preset"),
    (dict(preset="smoke", knobs=dict(num_iterations=5), budget=dict(tokens=100)), "the budget decides the steps"),
    (dict(preset="smoke", points=[dict(target_tokens=5)], budget=dict(flops=1e9)), r"points\[0\] sets target_tokens"),
    (dict(preset="smoke", budget=dict(tokens=1, flops=1)), "budget must be one of"),
    (dict(preset="smoke", budget=dict(seconds=-1)), "must be a positive number"),
    (dict(preset="smoke", knobs=dict(preset="seed15m")), "the spec's own \"preset\""),
    (dict(preset="smoke", points=[dict(head_dim="64")]), r"points\[0\]: head_dim must be an integer"),
    (dict(preset="smoke", grid=dict(depth=[])), "non-empty list"),
    # a knob given twice, under its alias or in two places: no value may silently win over the other
    (dict(preset="smoke", grid={"seq_len": [64], "sequence_len": [128]}),
     r"^grid sets sequence_len twice \(seq_len and sequence_len\): give it once$"),
    (dict(preset="smoke", knobs={"seq_len": 64, "sequence_len": 128}), r"knobs sets sequence_len twice"),
    (dict(preset="smoke", points=[{}, {"sequence_len": 64, "seq_len": 128}]),
     r"points\[1\] sets sequence_len twice \(sequence_len and seq_len\)"),
    (dict(preset="smoke", knobs=dict(depth=3), grid=dict(depth=[1, 2])),
     r"^depth is set by the spec's knobs .* and by the grid: drop one$"),
    (dict(preset="smoke", knobs=dict(seq_len=64), points=[{}, dict(sequence_len=128)]),
     r"sequence_len is set by the spec's knobs .* and by points\[1\]: drop one"),
])
def test_bad_specs_are_refused_with_what_to_change(d, match):
    with pytest.raises(SP.SweepError, match=match):
        SP.Spec.from_dict(d)


def test_a_spec_file_that_gives_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "spec.json"  # json.loads keeps the last "grid": the depth axis would vanish
    path.write_text('{"preset": "smoke", "grid": {"depth": [1, 2]}, "grid": {"head_dim": [16, 32]}}')
    with pytest.raises(SP.SweepError, match=f"{path}: an object gives 'grid' twice: give it once"):
        SP.Spec.load(path)
    path.write_text('{"preset": "smoke", "grid": {"depth": [1, 2], "depth": [3]}}')
    with pytest.raises(SP.SweepError, match="an object gives 'depth' twice"):
        SP.Spec.load(path)


def test_probes_run_once_at_each_points_last_step():
    spec = SP.Spec.from_dict(dict(preset="smoke", points=[{}, dict(depth=3)], budget=dict(flops=3e10), probes=True))
    for knobs in SP.point_knobs(spec):
        cfg = SP.with_budget(spec, get_preset("smoke").override(**knobs))
        assert cfg.eval.probes_every == cfg.loop.num_iterations > 0
    plain = SP.Spec.from_dict(dict(preset="smoke", budget=dict(flops=3e10)))
    assert SP.with_budget(plain, get_preset("smoke")).eval.probes_every == 0


def test_point_names_are_the_knobs_each_point_sets():
    s = SP.Spec.from_dict(dict(preset="ittybitty", grid=dict(tie_embeddings=[False, True], head_dim=[64, 128]),
                              points=[{}, dict(matrix_lr=0.03, seed=43), dict(preset="seed15m")]))
    assert [SP.point_name(k) for k in SP.point_knobs(s)] == [
        "tie_embeddings-false_head_dim-64", "tie_embeddings-false_head_dim-128", "tie_embeddings-true_head_dim-64",
        "tie_embeddings-true_head_dim-128", "base", "matrix_lr-0.03_seed-43", "preset-seed15m"]
    with pytest.raises(SP.SweepError, match="'base' and 'head_dim-64' are the same configuration: drop one"):
        S.plan_sweep("dup", dict(preset="ittybitty", points=[{}, dict(head_dim=64)]))


@pytest.mark.parametrize("d, same", [
    (dict(grid=dict(total_batch_size=[100, 1])), ("total_batch_size-100", "total_batch_size-1")),  # both 1,024
    (dict(points=[dict(total_batch_size=1500), dict(total_batch_size=1024)]),
     ("total_batch_size-1500", "total_batch_size-1024")),
    (dict(points=[{}, dict(num_iterations=120)]), ("base", "num_iterations-120")),  # smoke: 120 steps of 1,024
    (dict(grid=dict(total_batch_size=[100, 1]), budget=dict(flops=1e10)), ("total_batch_size-100",
                                                                          "total_batch_size-1")),
])
def test_points_that_train_the_same_run_are_refused(d, same):
    with pytest.raises(SP.SweepError, match=f"points '{same[0]}' and '{same[1]}' are the same configuration once "
                                            f"the batch is rounded to whole micro-batches .1,024 tokens per step."):
        S.plan_sweep("dup", dict(preset="smoke", **d))
    assert len(S.plan_sweep("dup", dict(preset="smoke", grid=dict(total_batch_size=[1024, 2048]))).points) == 2


def test_a_grid_of_head_counts_and_sizes_gives_each_point_their_product():
    sweep = S.plan_sweep(fresh("heads"), spec(grid=dict(n_head=[2, 4], head_dim=[16, 32])))
    assert [(p.failed, p.base.model.model_dim) for p in sweep.points] == [("", 32), ("", 64), ("", 64), ("", 128)]


# ------------------------------------------------------------------------------- budgets

@pytest.mark.parametrize("knobs", [{}, dict(tie_embeddings=True), dict(vocab_size=8192), dict(depth=8, model_dim=384),
                                   dict(preset="seed15m"), dict(head_dim=128, device_batch_size=40)])
def test_compute_matched_budgets_give_equal_flops_within_one_step(knobs):
    flops = 1.00663296e16  # ittybitty at 50M tokens
    s = SP.Spec.from_dict(dict(preset="ittybitty", budget=dict(flops=flops)))
    cfg = SP.with_budget(s, SP.resolve_point(s, knobs))
    p = RunPlan.of(cfg)
    step_flops = p.batch.total_batch_size * p.flops_per_token
    assert abs(p.tokens_at(p.num_iterations) * p.flops_per_token - flops) <= step_flops / 2
    assert cfg.loop.target_tokens == p.tokens_at(p.num_iterations)


def test_a_point_whose_steps_miss_the_budget_is_invalid():
    s = dict(preset="smoke", grid=dict(vocab_size=[300, 60000], depth=[1, 2]), budget=dict(flops=4e9))
    sweep = S.plan_sweep("overshoot", s)
    rows = {r["point"]: r for r in sweep.plan_rows()}
    assert [r["status"] for r in rows.values()] == ["pending", "pending", "invalid", "invalid"]
    assert rows["vocab_size-300_depth-2"]["flops"] == pytest.approx(0.92 * 4e9, rel=0.01)  # 8% under: kept
    big = rows["vocab_size-60000_depth-1"]  # one step of 1,024 tokens is already 6x the FLOPs
    assert big["steps"] == 1 and big["flops"] > 5 * 4e9
    assert big["error"] == ("1 step of 1,024 tokens = 2.4e+10 FLOPs, 6x the budget of 4e+09 FLOPs (more than "
                            "10% off, so not an equal budget): give a budget of at least 1.2e+11 FLOPs (5 steps), "
                            "or fewer tokens per step (total_batch_size, device_batch_size)")
    assert "invalid vocab_size-60000_depth-1: 1 step of 1,024 tokens" in sweep.describe()
    assert [p.name for p in sweep.todo()] == ["vocab_size-300_depth-1", "vocab_size-300_depth-2"]
    small_steps = dict(device_batch_size=4, total_batch_size=512)
    tokens = S.plan_sweep("few-tokens", dict(preset="smoke", points=[{}, small_steps],
                                             budget=dict(tokens=1500)))  # 1 step of 1,024 tokens; 3 of 512
    assert [(p.failed, p.config.loop.num_iterations) for p in tokens.points] == [("invalid", 1), ("", 3)]
    assert tokens.points[0].error.startswith("1 step of 1,024 tokens = 1,024 tokens, 0.68x the budget of 1,500")


def test_a_point_over_the_budget_is_kept_in_the_results_with_why_and_not_trained(capsys):
    s = spec(points=[{}, dict(sequence_len=4096)])  # 2 sequences of 4,096: one step is 4x the 2,048 tokens
    rows = {r["point"]: r for r in S.run_sweep(fresh("over"), s, progress=False)}
    assert [r["status"] for r in rows.values()] == ["done", "invalid"]
    df = SS.load_sweep("over")
    over = df.loc["sequence_len-4096"]
    assert over.status == "invalid" and over.error.startswith("1 step of 8,192 tokens = 8,192 tokens, 4x the budget")
    assert (over.steps, over.tokens) == (1, 8192) and not Run.at("over/sequence_len-4096").exists()


def test_token_and_time_budgets():
    cfg = get_preset("ittybitty")  # 491,520 tokens per step at device batch 48
    tokens = SP.Spec.from_dict(dict(preset="ittybitty", budget=dict(tokens=50_000_000)))
    assert SP.budget_steps(tokens, cfg) == round(50_000_000 / 491_520) == 102
    seconds = SP.Spec.from_dict(dict(preset="ittybitty", budget=dict(seconds=60)))
    assert SP.budget_steps(seconds, cfg, tok_per_s=2.0e6) == round(60 * 2.0e6 / 491_520) == 244
    assert SP.budget_steps(SP.Spec("ittybitty"), cfg) is None  # no budget: the config's own steps


def test_equal_time_calibrates_each_point_once_and_keeps_the_rate(capsys):
    s = spec(points=[{}], budget=dict(seconds=0.2), save_every=0, eval_every=1000)
    mine = Run.at("timed-calibration")  # a user's run whose name a careless calibration directory would take
    mine.dir.mkdir(parents=True, exist_ok=True)
    mine.metrics.path.write_text("")
    rows = S.run_sweep(fresh("timed"), s, progress=False)
    rates = json.loads((Run.at("timed/base").dir.parent / S.CALIBRATION).read_text())
    steps = max(1, round(0.2 * rates["base"] / 512))
    assert rows[0]["status"] == "done" and rows[0]["steps"] == steps
    assert not Run.at("timed/calibration-base").exists() and mine.metrics.path.exists()  # only its own runs go
    again = S.plan_sweep("timed")  # running again reads the rate: the same steps, no calibration run
    assert again.points[0].config.loop.num_iterations == steps and again.todo() == []


# ------------------------------------------------------------------------------- running

def test_a_sweep_of_only_invalid_points_writes_nothing_so_the_corrected_one_runs(capsys):
    name = fresh("allbad")
    with pytest.raises(SP.SweepError, match="every point of sweep 'allbad' is invalid"):
        S.run_sweep(name, spec(grid=dict(head_dim=[30])), progress=False)
    assert not Run.at("allbad").dir.exists()
    assert S.plan_sweep(name, spec(grid=dict(head_dim=[16]))).todo()  # not refused as "a different spec"


def test_invalid_and_failing_points_are_recorded_and_the_sweep_goes_on(capsys):
    # 4096 sequences a batch: more than val holds. The point sets device_batch_size, so the spec's knobs may not,
    # and it has no budget: one step of 524,288 tokens would miss any small one (invalid, not failed).
    knobs = {k: v for k, v in TINY.items() if k != "device_batch_size"}
    s = dict(preset="smoke", knobs=dict(knobs, total_batch_size=1024, num_iterations=2),
             points=[dict(device_batch_size=4096), dict(model_dim=48), dict(model_dim=32)])
    rows = {r["point"]: r for r in S.run_sweep(fresh("mixed"), s, progress=False)}
    out = capsys.readouterr().out
    assert out.index("invalid model_dim-48: model_dim=48 is not divisible by head_dim=32") < \
        out.index("[1/2] device_batch_size-4096: failed") < out.index("[2/2] model_dim-32: done")
    assert [r["status"] for r in rows.values()] == ["failed", "invalid", "done"]
    assert "the 'val' split" in rows["device_batch_size-4096"]["error"]
    df = SS.load_sweep("mixed")
    assert list(df.reset_index().columns) == S.RESULT_COLUMNS
    assert df.status.tolist() == ["failed", "invalid", "done"] and df.error.iloc[1].startswith("model_dim=48")
    done = df.loc["model_dim-32"]
    counts = calc.param_counts(resolve("smoke", dict(model_dim=32)).model)
    assert [done[c] for c in S.PARAM_COLUMNS] == [counts[k] for k in ("wte", "blocks", "lm_head", "total")]
    assert (done.steps, done.tokens, done.flops) == (2, 2048, 2048 * done.flops_per_token)
    assert 0 < done.val_bpb < 10 and done.tok_per_s > 0 and done.seconds > 0 and pd.isna(done.core)
    fig = SS.plot_sweep(df)
    assert {ln.get_gid() for ax in fig.axes for ln in ax.lines} == {"point:model_dim-32"}


def test_points_of_each_num_shards_get_their_splits_prepared_before_any_starts(monkeypatch):
    """Points of one tokenizer but another num_shards validate on another shard: each is prepared, not only the
    first point's splits."""
    from tinylab import tokens

    prepared, real = [], tokens.prepare_tokens
    monkeypatch.setattr(tokens, "prepare_tokens", lambda cfg, progress: prepared.append(cfg.data.num_shards) or
                        real(cfg, progress=progress))
    sweep = S.plan_sweep(fresh("shards"), spec(grid=dict(num_shards=[0, 2, 3])))
    sweep.prepare(sweep.points, progress=False)
    assert prepared == [0, 2, 3] and not any(p.failed for p in sweep.points)


def test_a_killed_sweep_resumes_skipping_finished_points():
    s = spec(points=[{}, dict(seed=43)], budget={"tokens": 6 * 512}, save_every=2)

    def kill_mid_second_point(rec):
        if rec["kind"] == "done":
            finished.append(rec["run"])
        elif finished and rec["kind"] == "train" and rec["step"] == 3:  # seed-43's step-2 checkpoint exists
            raise Kill

    finished = []
    with pytest.raises(Kill):
        S.run_sweep(fresh("killed"), s, progress=False, callback=kill_mid_second_point)
    base = Run.at("killed/base").metrics.path.read_bytes()
    assert pd.read_csv(Run.at("killed/base").dir.parent / S.RESULTS).status.tolist() == ["done", "partial"]
    again = []
    rows = S.run_sweep("killed", s, progress=False, callback=again.append)
    assert {r["run"] for r in again if r["kind"] == "done"} == {"killed/seed-43"}  # base was not retrained
    assert [r["step"] for r in again if r["kind"] == "train"] == [3, 4, 5, 6]    # seed-43 resumed at step 2
    assert Run.at("killed/base").metrics.path.read_bytes() == base
    assert [r["status"] for r in rows] == ["done", "done"]
    with pytest.raises(SP.SweepError, match="was started with a different spec"):
        S.run_sweep("killed", spec(points=[{}]), progress=False)


def test_metrics_summary_reads_probes_and_core_by_kind(tmp_path):
    lines = [dict(kind="train", step=s, elapsed=s * 2.0, tok_per_s=100.0 * s, mfu=None, mem_gb=s / 10)
             for s in (1, 2, 3)]
    lines += [dict(kind="eval", val_bpb=2.5), dict(kind="probes", accuracy=0.61), dict(kind="future", x=1),
              dict(kind="core", core=0.07), dict(kind="eval", val_bpb=2.25), dict(kind="probes", accuracy=None)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert S.metrics_summary(Run(tmp_path)) == dict(seconds=6.0, tok_per_s=200.0, mfu=None, peak_mem_gb=0.3,
                                                    val_bpb=2.25, probe_accuracy=0.61, core=0.07)


# ------------------------------------------------------------------------------- several GPUs

STUB = """import os, sys, time
slot = os.environ["CUDA_VISIBLE_DEVICES"]
with open(sys.argv[1], "a") as f: f.write(f"{slot} {time.time()} start\\n")
time.sleep(0.3)
with open(sys.argv[1], "a") as f: f.write(f"{slot} {time.time()} end\\n")
if sys.argv[2] == "fail":
    print("error: boom", file=sys.stderr); sys.exit(1)
"""


def test_the_queue_runs_one_process_per_gpu_and_starts_the_next_when_one_ends(tmp_path):
    trace = tmp_path / "trace"
    jobs = [Q.Job(f"p{i}", [sys.executable, "-c", STUB, str(trace), "fail" if i == 2 else "ok"], tmp_path / f"p{i}.log")
            for i in range(5)]
    t0 = time.time()
    results = {job.name: (code, err) for job, code, err in Q.run_queue(jobs, ["3", "7"])}
    assert results == {f"p{i}": (1, "boom") if i == 2 else (0, "") for i in range(5)}
    events = sorted((float(t), kind, slot) for slot, t, kind in (ln.split() for ln in trace.read_text().splitlines()))
    running = peak = 0
    for _, kind, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2 and {slot for *_, slot in events} == {"3", "7"}
    assert time.time() - t0 < 5 * 0.3  # 3 rounds of 0.3 s plus start-up, not 5 in a row


def test_each_point_becomes_a_train_command_for_exactly_its_config(monkeypatch):
    s = SP.Spec.from_dict(dict(preset="ittybitty", knobs=dict(eval_every=25, matrix_lr=0.025),
                              budget=dict(flops=1e16)))
    seen = {}
    monkeypatch.setattr(train_mod, "train", lambda preset, run, **kw: seen.update(preset=preset, run=run, **kw) or
                        dict(step=1, tokens=1, val_bpb=None, run_dir="", time=dict(total=0.0)))
    for knobs in [{}, dict(head_dim=128), dict(depth=8, model_dim=384), dict(tie_embeddings=True),
                  dict(preset="seed15m"), dict(vocab_size=8192, n_kv_head=2)]:
        cfg = SP.with_budget(s, SP.resolve_point(s, knobs))
        argv = Q.train_argv(cfg, "sw/p", "cuda", "--resume")
        assert argv[:3] == [sys.executable, "-m", "tinylab.train"]
        train_mod.main(argv[3:])
        knob_args = {k: v for k, v in seen.items() if k not in ("preset", "run", "device", "resume", "overwrite",
                                                                  "progress")}
        assert resolve(seen["preset"], knob_args) == cfg and seen["device"] == "cuda" and seen["resume"]


def test_gpu_slots(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("TINYLAB_DEVICE")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert Q.gpu_slots() == Q.gpu_slots("cuda") == ["3", "5"]
    assert Q.gpu_slots("cuda:1") == Q.gpu_slots("cpu") == []
    assert Q.gpu_slots("cpu", ["0", "1"]) == ["0", "1"]  # explicit slots: parallel even on the CPU (a dry run)
    assert Q.gpu_slots(None, ["5"]) == ["5"]
    with pytest.raises(SP.SweepError, match="names GPU\\(s\\) 0, 7, but the GPUs visible here are 3, 5"):
        Q.gpu_slots("cuda", ["0", "7"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert Q.gpu_slots() == []


def test_failed_children_are_recorded(tmp_path, monkeypatch):
    sweep = S.Sweep.open(fresh("kids"), spec(points=[{}, dict(seed=43)]))
    monkeypatch.setattr(S, "train_argv", lambda cfg, run, device, *flags: [
        sys.executable, "-c", STUB, str(tmp_path / "t"), "fail" if cfg.loop.seed == 43 else "ok"])
    sweep.train_children(["0", "1"], "cpu", progress=False)
    assert [(p.failed, p.error) for p in sweep.points] == [("", ""), ("failed", "boom")]
    assert (sweep.dir / S.LOGS / "seed-43.log").read_text().strip().endswith("error: boom")


# ------------------------------------------------------------------------------- published sweeps

def test_published_sweeps_are_found_by_the_one_lookup_rule(tmp_path, monkeypatch):
    docs = tmp_path / "docs-sweeps"
    monkeypatch.setattr(run_mod, "DOCS_SWEEPS", docs)
    s = spec(points=[{}])
    S.run_sweep(fresh("pub"), s, progress=False)
    local = find_sweep("pub")
    published = docs / "pub"
    published.mkdir(parents=True)
    for f in ("spec.json", "results.csv"):
        (published / f).write_bytes((local / f).read_bytes())
    (published / "base").mkdir()
    for f in ("config.json", "metrics.jsonl"):
        (published / "base" / f).write_bytes((local / "base" / f).read_bytes())
    assert find_sweep("pub") == local and find_sweep("docs/sweeps/pub") == published
    assert all_sweeps()["docs/sweeps/pub"] == published and SS.published_sweeps() == {"docs/sweeps/pub": published}
    runs = Run.all()
    assert runs["pub/base"].dir == local / "base" and not runs["pub/base"].published
    assert runs["docs/sweeps/pub/base"].published and Run.find("docs/sweeps/pub/base").dir == published / "base"
    assert not any(name.endswith("pub/base") for name in published_runs())  # notebook 04 keeps docs/runs only
    df = SS.load_sweep("docs/sweeps/pub")
    assert df.attrs["dir"] == str(published) and SS.sweep_runs(df).run.unique().tolist() == ["base"]
    shutil.rmtree(local)
    assert find_sweep("pub") == published and Run.find("pub/base").published


# ------------------------------------------------------------------------------- the answer table

def test_answer_table_pools_seeds_and_weighs_margins_against_their_range():
    points = [{}, dict(seed=43), dict(seed=44), dict(tie_embeddings=True), dict(head_dim=128), dict(preset="seed15m"),
              dict(vocab_size=8192)]
    sweep = S.plan_sweep("answers", dict(preset="ittybitty", points=points, budget=dict(flops=1e16)))
    df = pd.DataFrame(sweep.rows()).set_index("point")
    df["status"] = "done"
    df["val_bpb"] = [1.000, 1.004, 0.998, 1.100, 1.002, 1.300, None]
    df.loc["vocab_size-8192", "status"] = "failed"
    df.attrs["spec"] = sweep.spec.to_dict()
    t = SS.answer_table(df)
    assert t.loc["wte and lm_head: untied or tied?", "best"] == "untied"
    assert t.loc["wte and lm_head: untied or tied?", "margin_bpb"] == pytest.approx(1.100 - (1.000 + 1.004 + 0.998) / 3)
    assert t.loc["wte and lm_head: untied or tied?", "seed_range_bpb"] == pytest.approx(0.006)
    assert t.loc["attention: 8 heads × 64 or 4 × 128?", "verdict"].startswith("no clear winner")
    assert t.loc["seed15m or ittybitty?", "arms"] == \
        "ittybitty (37.7M): 1.0007 ±0.0030 (3 seeds) · seed15m (15.7M): 1.3000"
    assert t.loc["vocabulary: 8,192, 24,576 or 32,768?", "verdict"] == \
        "not answered: 8,192 has no finished point yet (failed)"  # not "not in this sweep": its point failed
    assert t.loc["depth 4, 6 or 8 at about equal block parameters?", "verdict"] == "not in this sweep"


def lengths_sweep(**status):
    """tied × untied × 10 or 40 steps, no budget (each point its own length), all seed 42, as results would be."""
    sweep = S.plan_sweep("lengths", dict(preset="smoke", knobs=TINY, grid=dict(tie_embeddings=[False, True],
                                                                              num_iterations=[10, 40])))
    df = pd.DataFrame(sweep.rows()).set_index("point")
    df["status"] = "done"
    # untied wins at both lengths, but pooled over lengths its "seed range" would swallow the margin
    df["val_bpb"] = [3.60, 3.20, 3.80, 3.30]
    for point, st in status.items():
        df.loc[point, ["status", "val_bpb"]] = [st, None]
    df.attrs["spec"] = sweep.spec.to_dict()
    return df


def test_answer_table_compares_arms_per_budget_and_never_pools_lengths_as_seeds():
    df = lengths_sweep()
    assert df.tokens.tolist() == [10 * 512, 40 * 512] * 2 and set(df.seed) == {42}
    row = SS.answer_table(df, [SS.QUESTIONS[0]]).iloc[0]
    assert row.best == "untied" and row.margin_bpb == pytest.approx(0.10) and pd.isna(row.seed_range_bpb)
    assert "seeds" not in row.arms  # one seed per arm and length: nothing pooled
    assert row.arms == ("at 5,120 tokens: untied (164k): 3.6000 · tied (131k): 3.8000 | "
                        "at 20,480 tokens: untied (164k): 3.2000 · tied (131k): 3.3000")
    assert row.verdict.startswith("untied at each of 2 budgets: at 5,120 tokens: untied, by 0.2000 bpb")


def test_answer_table_names_arms_without_a_finished_point_and_lengths_they_did_not_share():
    df = lengths_sweep(**{"tie_embeddings-true_num_iterations-10": "failed",
                          "tie_embeddings-true_num_iterations-40": "pending"})
    assert SS.answer_table(df, [SS.QUESTIONS[0]]).iloc[0].verdict == \
        "not answered: tied has no finished point yet (failed, pending)"
    df = lengths_sweep(**{"tie_embeddings-true_num_iterations-10": "failed",
                          "tie_embeddings-false_num_iterations-40": "failed"})
    assert SS.answer_table(df, [SS.QUESTIONS[0]]).iloc[0].verdict == \
        "not answered: the arms finished only at different budgets (untied: 5,120 tokens; tied: 20,480 tokens)"


def test_seeds_count_distinct_seeds_not_points():
    points = [{}, dict(device_batch_size=1), dict(seed=43), dict(tie_embeddings=True)]
    sweep = S.plan_sweep("seeds", dict(preset="smoke", knobs={k: v for k, v in TINY.items() if k != "device_batch_size"},
                                       points=points, budget={"tokens": 4 * 512}))
    df = pd.DataFrame(sweep.rows()).set_index("point")
    df["status"], df["val_bpb"] = "done", [3.0, 3.02, 3.04, 3.5]
    df.attrs["spec"] = sweep.spec.to_dict()
    row = SS.answer_table(df, [SS.QUESTIONS[0]]).iloc[0]
    assert "untied (164k): 3.0200 ±0.0200 (3 points, 2 seeds)" in row.arms and row.best == "untied"


def test_plot_sweep_gives_each_point_its_own_colour_and_marker():
    sweep = S.plan_sweep("many", dict(preset="smoke", knobs=TINY, grid=dict(seed=list(range(12)))))
    df = pd.DataFrame(sweep.rows()).set_index("point")
    df["status"], df["val_bpb"] = "done", 3.0
    df["flops"] = df.flops.fillna(1.0)
    df.attrs["spec"] = sweep.spec.to_dict()
    fig = SS.plot_sweep(df)
    looks = [(ln.get_color(), ln.get_marker()) for ln in fig.axes[0].lines]
    assert len(looks) == 12 and len(set(looks)) == 12  # colour and marker both repeated every 10 points


# ------------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("argv, match", [
    (["x", "--preset", "smoke", "--grid", "head_dimm=1,2"], "unknown knob 'head_dimm'"),
    (["x", "--preset", "smoke", "--grid", "tie_embeddings=yes,perhaps"], "give tie_embeddings True or False"),
    (["x", "--spec", "nope.json"], "no spec file nope.json"),
    (["x", "--spec", "nope.json", "--tokens", "5"], "--spec takes the whole sweep from its file"),
    (["x"], "sweep 'x' has not been started"),
    (["../x", "--preset", "smoke"], "not a usable sweep name"),
    (["x", "--preset", "smoke", "--tokens", "1.5"], "--tokens must be a whole number"),
    (["x", "--preset", "smoke", "--point", "seq_len=64", "sequence_len=128", "--point", "depth=1", "--plan"],
     r"--point seq_len=64 sequence_len=128 sets sequence_len twice \(seq_len and sequence_len\): give it once"),
    (["x", "--preset", "smoke", "--seq-len", "64", "--grid", "sequence_len=128,256", "--plan"],
     "sequence_len is set by the spec's knobs .on the command line: its knob flag. and by the grid: drop one"),
    (["x", "--preset", "smoke", "--grid", "depth=1,2", "--grid", "depth=3", "--plan"],  # the first --grid was lost
     "the grid sets depth twice: give all its values in one KNOB=A,B"),
    (["x", "--preset", "smoke", "--grid", "total_batch_size=100,1", "--plan"],
     "'total_batch_size-100' and 'total_batch_size-1' are the same configuration once the batch is rounded"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, match, capsys):
    assert cli(S.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and pytest.importorskip("re").search(match, err)
    assert not (Run.at("x").dir).exists()


def test_cli_plan_trains_and_writes_nothing(capsys):
    argv = ["planned", "--preset", "smoke", "--grid", "model_dim=32,48", "--flops", "1.6e10", "--eval-every", "20"]
    assert cli(S.main, [*argv, "--plan"]) == 0
    out = capsys.readouterr().out
    assert "equal training FLOPs" in out and "model_dim-32" in out and "invalid model_dim-48" in out
    assert not Run.at("planned/model_dim-32").dir.parent.exists()
    assert cli(S.main, ["planned", "--preset", "smoke", "--grid", "depth=1,2", "--grid", "head_dim=16,32", "--plan"]) == 0
    assert "sweep planned: 4 points" in capsys.readouterr().out  # a second --grid adds its axes
