"""The training loop: smoke learning, exact resume, DDP == grad accumulation, CLI, errors."""
import dataclasses
import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from tinylab import checkpoint, launch, paths, prepare
from tinylab.config import ConfigError
from tinylab.errors import TinylabError, cli
from tinylab.model import build_model
from tinylab.presets import get_preset, resolve
from tinylab.run import Run
from tinylab.schedule import plan
from tinylab.train import Dist, NonFiniteLossError, OutOfMemoryError, TrainError, ensure_run, main, train

# a few micro-steps of the smoke model: seq 128, micro-batch 2 × 128 tokens
TINY = dict(device_batch_size=2, total_batch_size=512, eval_tokens=512, eval_every=3, sample_every=0, log_every=1)


def metrics(run):
    with open(paths.runs_dir() / run / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def losses(run):
    return {r["step"]: r["loss"] for r in metrics(run) if r["kind"] == "train"}


def test_resume_reproduces_the_uninterrupted_loss_curve():
    train("smoke", "full", num_iterations=6, progress=False, **TINY)

    class Kill(Exception):
        pass

    def kill_after_step_4(rec):  # the step-3 checkpoint has been written by then
        if rec["kind"] == "train" and rec["step"] == 4:
            raise Kill

    with pytest.raises(Kill):
        train("smoke", "cut", num_iterations=6, progress=False, callback=kill_after_step_4, **TINY)
    assert Run.at("cut").latest_checkpoint().name == "step_000003"
    with pytest.raises(TrainError, match="resume"):  # never silently overwrites
        train("smoke", "cut", num_iterations=6, progress=False, **TINY)
    summary = train("smoke", "cut", num_iterations=6, progress=False, resume=True, **TINY)
    a, b = losses("full"), losses("cut")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]  # lines after the checkpoint were dropped
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6
    assert summary["step"] == 6 and summary["val_bpb"] == pytest.approx(metrics("full")[-1]["val_bpb"], abs=1e-6)
    meta = checkpoint.read_meta(Run.at("cut").latest_checkpoint())
    assert meta["finished"] and meta["step"] == 6


def full_disk_at(step: int, delay: float = 0.0):
    """checkpoint.write_checkpoint, failing like a full disk for `step`'s checkpoint after `delay` seconds."""
    real = checkpoint.write_checkpoint

    def write(run, snap, keep=1):
        if snap.body["step"] == step:
            time.sleep(delay)
            raise OSError(28, "No space left on device")
        return real(run, snap, keep)
    return write


def test_a_failed_checkpoint_write_stops_the_run_at_the_next_step(monkeypatch):
    """The write fails on its thread while the steps go on: the run stops at the next step it begins after that
    (CheckpointWriter.poll), not at the next save, with the disk's error; the checkpoint before it stays."""
    monkeypatch.setattr(checkpoint, "write_checkpoint", full_disk_at(5))
    with pytest.raises(OSError, match="No space left"):
        train("smoke", "diskfull", num_iterations=12, progress=False, **dict(TINY, eval_every=5))
    assert 5 <= max(losses("diskfull")) <= 8 and not Run.at("diskfull").checkpoints()  # the next save would be step 10's


def test_a_stopped_run_reports_why_it_stopped_and_a_failed_write_besides(monkeypatch, capsys):
    """The step-3 checkpoint is still being written (and fails) when the loop stops at step 4: the error raised is
    the loop's; the lost checkpoint gets one line of its own, and the checkpoint before it stays."""
    class Kill(Exception):
        pass

    def kill_at_4(rec):
        if rec["kind"] == "train" and rec["step"] == 4:
            raise Kill

    monkeypatch.setattr(checkpoint, "write_checkpoint", full_disk_at(3, delay=2.0))
    with pytest.raises(Kill):
        train("smoke", "lost", num_iterations=6, progress=False, callback=kill_at_4, **dict(TINY, eval_every=1))
    assert "the checkpoint being written was lost too: [Errno 28] No space left" in capsys.readouterr().err
    assert Run.at("lost").latest_checkpoint().name == "step_000002"


def _ddp_worker(rank, port, overrides):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    train("smoke", "ddp", device="cpu", progress=False, **overrides)


def test_ddp_on_two_gloo_ranks_equals_single_process_accumulation():
    # 4 micro-batches per step: one process accumulates all 4, two ranks take 2 each (no_sync on the first)
    overrides = dict(TINY, total_batch_size=4 * 2 * 128, num_iterations=2, eval_every=2)
    train("smoke", "single", progress=False, **overrides)  # also pretokenizes for the workers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, overrides), nprocs=2, join=True)
    cfg = json.loads((paths.runs_dir() / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["derived"]["grad_accum"] == 2
    m1 = checkpoint.load_model("single")[0].state_dict()
    m2 = checkpoint.load_model("ddp")[0].state_dict()
    torch.manual_seed(42)  # train()'s default seed: the same initial weights
    init = build_model(get_preset("smoke").model)
    key = "transformer.h.0.attn.c_q.weight"
    assert not torch.allclose(m1[key], init.state_dict()[key], atol=1e-4)  # the weights did move
    for k in m1:  # two optimizer steps from all-reduced grads == from locally accumulated grads
        torch.testing.assert_close(m2[k], m1[k], rtol=1e-4, atol=1e-5)
    assert losses("ddp")[1] == pytest.approx(losses("single")[1], abs=1e-5)


def test_smoke_run_beats_the_unigram_baseline():
    from tinylab.evaluate import val_unigram_bpb
    from tinylab.tokenizer import get_tokenizer

    summary = train("smoke", "learn", num_iterations=40, progress=False,
                    **dict(TINY, device_batch_size=8, total_batch_size=1024, eval_every=40, eval_tokens=8192))
    baseline = val_unigram_bpb(get_tokenizer(get_preset("smoke")), "sample")
    assert 3.0 < baseline < 6.0
    evals = [r["val_bpb"] for r in metrics("learn") if r["kind"] == "eval"]
    assert evals[0] > baseline > summary["val_bpb"] == evals[-1]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(monkeypatch):
    import tinylab.train as T

    # a NaN learning rate from step 3 on: the update of step 4 poisons the weights
    monkeypatch.setattr(T, "lr_multiplier", lambda step, *a: 1.0 if step < 3 else float("nan"))
    with pytest.raises(NonFiniteLossError, match="step_000003"):
        train("smoke", "nan", num_iterations=8, progress=False, **dict(TINY, eval_every=100, save_every=3))
    ckpt = Run.at("nan").latest_checkpoint()
    assert ckpt.name == "step_000003"
    model = checkpoint.load_model("nan")[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["step"] for r in metrics("nan") if r["kind"] == "train"] == [1, 2, 3, 4]


def test_a_nan_evaluation_stops_training_before_it_saves(monkeypatch):
    """Between two train log lines only the evaluation sees the weights diverge: it is logged as it was, then
    training stops with the last good checkpoint, as a NaN loss does."""
    import tinylab.train as T

    monkeypatch.setattr(T, "lr_multiplier", lambda step, *a: 1.0 if step < 3 else float("nan"))
    with pytest.raises(NonFiniteLossError, match="val bpb is nan at step 5 .*step_000003"):
        train("smoke", "nan-eval", num_iterations=8, progress=False,
              **dict(TINY, eval_every=5, save_every=3, log_every=100))
    assert Run.at("nan-eval").latest_checkpoint().name == "step_000003"
    assert [(r["step"], r["val_bpb"] == r["val_bpb"]) for r in metrics("nan-eval") if r["kind"] == "eval"] == \
        [(0, True), (5, False)]


def test_overwrite_deletes_the_old_run_only_once_the_new_one_has_built():
    train("smoke", "ow", num_iterations=2, progress=False, **TINY)
    before = sorted(p.name for p in Run.at("ow").dir.rglob("*"))
    with pytest.raises(TinylabError, match="fewer than 1 window"):  # fails on its data, once the build has begun
        train("smoke", "ow", overwrite=True, num_iterations=2, progress=False, **dict(TINY, device_batch_size=100_000))
    assert sorted(p.name for p in Run.at("ow").dir.rglob("*")) == before  # the old run is all there
    train("smoke", "ow", overwrite=True, num_iterations=1, progress=False, **TINY)
    assert [c.name for c in Run.at("ow").checkpoints()] == ["step_000001"]


def test_a_resume_at_an_unfinished_checkpoints_step_finishes_it_and_damaged_meta_is_one_error():
    from tinylab.checkpoint import CheckpointError, read_meta
    from tinylab.train import resume_advice

    assert resume_advice("never-trained") == "no checkpoint yet: run the same command again"
    class Stop(Exception):
        pass

    def stop_at_3(rec):
        if rec["kind"] == "train" and rec["step"] == 3:
            raise Stop

    with pytest.raises(Stop):  # stopped after step 2's save
        train("smoke", "halfway", num_iterations=4, progress=False, callback=stop_at_3, **dict(TINY, save_every=2))
    ckpt = Run.at("halfway").checkpoint(2)
    meta = read_meta(ckpt)
    assert not meta["finished"] and "--resume" in resume_advice("halfway")
    train("smoke", "halfway", resume=True, num_iterations=2, progress=False, **dict(TINY, save_every=2))
    assert read_meta(Run.at("halfway").latest_checkpoint())["finished"]
    marker = ckpt / checkpoint.CHECKPOINT_MARKER
    for damaged in ([], dict(meta, step="2"), {k: v for k, v in meta.items() if k != "loader"}):
        marker.write_text(json.dumps(damaged))
        with pytest.raises(CheckpointError, match="is damaged"):
            train("smoke", "halfway", resume=True, num_iterations=4, progress=False, **dict(TINY, save_every=2))


def test_ensure_run_trains_once_and_load_model():
    run = ensure_run("smoke", "ens", progress=False, num_iterations=2, **TINY)
    before = run.metrics.path.read_text()
    assert ensure_run("smoke", "ens", progress=False, num_iterations=2, **TINY).dir == run.dir
    assert run.metrics.path.read_text() == before  # finished: nothing retrained
    model, tok, meta = checkpoint.load_model("ens")
    assert not model.training and meta["step"] == 2 and tok.hash == meta["tokenizer"]["hash"]
    cfg = json.loads(run.config_path.read_text())
    for key in ("run", "preset", "model", "data", "batch", "loop", "optim", "eval", "derived", "tokenizer",
                "device", "world_size", "created", "format"):
        assert key in cfg
    assert cfg["derived"]["params"] == 163_840 and cfg["loop"]["num_iterations"] == 2
    rec = [r for r in metrics("ens") if r["kind"] == "train"][-1]
    for key in ("step", "tokens", "flops", "loss", "lr", "tok_per_s", "mfu", "mem_gb", "elapsed"):
        assert key in rec


def test_probes_that_do_not_fit_the_context_are_refused_before_anything_is_written():
    from tinylab.probes import ProbeError

    with pytest.raises(ProbeError, match="the probes need sequence_len >= .*probes_every=0"):
        train("smoke", "short-ctx", progress=False, num_iterations=4, probes_every=2, sequence_len=8,
              **dict(TINY, total_batch_size=64, eval_tokens=64))
    run = Run.at("short-ctx")
    assert not run.config_path.exists() and not run.metrics.path.exists()


def test_ensure_run_trains_a_finished_run_on_to_a_longer_plan_and_refuses_another_architecture():
    run = ensure_run("smoke", "ens-plan", progress=False, num_iterations=2, **TINY)
    assert checkpoint.finished(run.latest_checkpoint())
    ensure_run("smoke", "ens-plan", progress=False, num_iterations=3, **TINY)  # was returned as it stood
    assert run.latest_checkpoint().name == "step_000003"
    with pytest.raises(TrainError, match="was trained as .*use a new --run name"):
        ensure_run("smoke", "ens-plan", progress=False, num_iterations=3, model_dim=32, head_dim=16, **TINY)
    with pytest.raises(TrainError, match="already at step 3"):
        ensure_run("smoke", "ens-plan", progress=False, num_iterations=2, **TINY)
    assert run.latest_checkpoint().name == "step_000003"  # neither refusal touched it


def test_plan_rounds_batch_48_and_bad_options_are_named():
    p = plan("ittybitty")
    assert p["grad_accum"] == 5 and p["total_batch_size"] == 491_520 and "491,520" in p["batch_note"]
    assert p["num_iterations"] == round(500_000_000 / 491_520)
    p = plan("ittybitty", depth=6, seq_len=1024, device_batch_size=64, tie_embeddings=True)
    assert "depth 6" in p["model"] and "tied" in p["model"] and p["grad_accum"] == 8
    with pytest.raises(ConfigError, match="lernrate"):
        resolve("smoke", dict(lernrate=1))


def test_summary_says_where_the_time_went(monkeypatch):
    import time as clock

    import tinylab.train as tr

    real = tr.evaluate_bpb

    def slow_eval(*a, **k):  # a known 0.2 s per evaluation must land in "eval", not in "steps"
        clock.sleep(0.2)
        return real(*a, **k)

    monkeypatch.setattr(tr, "evaluate_bpb", slow_eval)
    t0 = clock.perf_counter()
    t = train("smoke", "time-split", num_iterations=4, progress=False, **TINY)["time"]
    wall = clock.perf_counter() - t0
    alongside = t.pop("alongside")  # the data, prepared on a second thread while the model is built
    assert set(alongside) == {"tokenizer", "tokens"} and all(v >= 0 for v in alongside.values())
    assert {"build", "compile", "data", "eval", "save", "steps", "other", "total"} <= set(t)
    assert 0.6 <= t["eval"] < 0.6 + t["total"] / 2 and t["steps"] > 0  # evals at steps 0, 3 and 4
    assert all(v >= 0 for v in t.values())
    assert sum(v for k, v in t.items() if k != "total") == pytest.approx(t["total"], rel=1e-9)
    assert sum(alongside.values()) <= t["build"] + t["data"] + 0.05  # over before training starts (no warm-up: CPU)
    assert t["total"] <= wall
    assert [r["tok_per_s"] > 0 for r in metrics("time-split") if r["kind"] == "train"] == [True] * 4


def test_warm_up_compiles_alongside_the_data_and_changes_no_number(monkeypatch):
    import tinylab.train as tr

    calls = []
    real = tr.warm_up

    def counted(*a, **k):
        calls.append(tr.threading.current_thread().name)
        return real(*a, **k)

    train("smoke", "cold", num_iterations=4, progress=False, **TINY)
    monkeypatch.setattr(tr.torch, "compile", lambda m, **k: m)  # compile=True without Inductor: warm_up runs
    monkeypatch.setattr(tr, "warm_up", counted)
    t = train("smoke", "warm", num_iterations=4, progress=False, compile=True, **TINY)["time"]
    assert calls == ["MainThread"] and t["compile"] > 0 and set(t["alongside"]) == {"files", "tokenizer", "tokens"}
    cold, warm = metrics("cold"), metrics("warm")
    assert [(r["kind"], r.get("loss"), r.get("val_bpb")) for r in cold] == \
           [(r["kind"], r.get("loss"), r.get("val_bpb")) for r in warm]  # bit for bit: no step, no random draw


def test_a_fresh_compiled_run_makes_its_data_files_in_a_child_process(monkeypatch, tmp_path):
    """The tokenizer and the tokens exist before the data thread's load_data starts: a child made them, off this
    process' GIL; the thread only opens them."""
    import tinylab.train as tr

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    found, real = [], tr.load_data
    monkeypatch.setattr(tr, "load_data", lambda *a: found.append(sorted(p.name for p in tmp_path.iterdir())) or real(*a))
    monkeypatch.setattr(tr.torch, "compile", lambda m, **k: m)
    t = train("smoke", "aside", num_iterations=2, progress=False, compile=True, **TINY)["time"]
    assert found == [["runs", "tokenizer", "tokens"]]
    assert t["alongside"]["files"] > 0 and losses("aside").keys() == {1, 2}


def test_a_failing_data_child_reports_through_the_parent_with_one_error(monkeypatch, tmp_path, capfd):
    """The child ends quietly; load_data meets the same error and raises it: one message, no traceback."""
    import tinylab.train as tr
    from tinylab.data import CorpusError

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    monkeypatch.setattr(tr.torch, "compile", lambda m, **k: m)
    with pytest.raises(CorpusError, match="needs at least 2 shards"):  # no fineweb downloaded
        train("smoke", "nofw", num_iterations=2, progress=False, compile=True, corpus="fineweb", **TINY)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("where", ["compile's imports", "warm-up"])
def test_a_failed_build_stops_the_data_child_and_its_thread(monkeypatch, tmp_path, where):
    """Wherever the build fails, the child is terminated while it works, leaves no temporary file, and the data
    thread ends without doing the work itself: nothing writes under TINYLAB_HOME once train() has raised."""
    import subprocess
    import threading
    import types

    import tinylab.train as tr

    terminated = []

    class Spied(subprocess.Popen):
        def terminate(self):
            terminated.append(self.poll())  # None: it was still running
            super().terminate()

    def broken(*a, **k):
        time.sleep(0.3)  # the child is still starting (or, on a fast machine, training the tokenizer)
        raise RuntimeError(f"{where} failed")

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    monkeypatch.setattr(tr.torch, "compile", lambda m, **k: m)
    monkeypatch.setattr(prepare.subprocess, "Popen", Spied)
    if where == "warm-up":
        monkeypatch.setattr(tr, "warm_up", broken)
    else:
        monkeypatch.setattr(tr, "importlib", types.SimpleNamespace(import_module=broken))
    with pytest.raises(RuntimeError, match=f"{where} failed"):
        train("smoke", "stopped", num_iterations=2, progress=False, compile=True, **TINY)
    assert terminated == [None] and not any(t.name == "tinylab-data" for t in threading.enumerate())
    files = sorted(tmp_path.rglob("*"))
    time.sleep(1.0)
    assert sorted(tmp_path.rglob("*")) == files and not [f for f in files if f.suffix == ".tmp"]


def test_the_data_child_stops_itself_when_its_parent_is_gone(tmp_path, monkeypatch):
    """Its stdin closes with its parent: the child stops (SIGTERM to itself, so its writes clean up), exit code 1."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    child = prepare.start_data_child(resolve("smoke", {}), progress=False)
    child.stdin.close()  # what the parent's death does
    assert child.wait(60) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_the_data_child_imports_no_torch():
    """The child's module and everything it imports leave torch out, so the child is at work within a fraction of
    a second of its start instead of after torch's 1.5-3 s import (docs/benchmarks.md §3, session 5)."""
    import subprocess
    import sys

    assert "from tinylab.prepare import prepare_files_child" in prepare._CHILD  # the child's one entry point
    code = ("import sys, tinylab.prepare, tinylab.launch; "
            "print(sorted(m for m in ('torch', 'tinylab.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout
    assert out.strip() == "[]"


def test_precompile_kernels_runs_a_step_and_an_evaluation_and_changes_nothing(monkeypatch):
    """The thread that compiles the kernels ahead runs one training sequence forward and backward and one
    evaluation batch, yet leaves the weights, their gradients and the random state as they were."""
    import tinylab.train as tr

    cfg = resolve("smoke", {})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    weights, rng = {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()
    grads, evals, real = [], [], torch.autograd.grad
    monkeypatch.setattr(tr.torch.autograd, "grad", lambda out, ins: grads.append(len(ins)) or real(out, ins))
    monkeypatch.setattr(tr, "evaluate_bpb", lambda m, batches, *a: evals.append(batches[0][0].shape))
    tr.precompile_kernels(model, cfg, torch.device("cpu"))
    assert grads == [len(list(model.parameters()))] and evals == [(1, cfg.model.sequence_len)]
    assert all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    fp8 = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, fp8_lm_head=True))
    tr.precompile_kernels(model, fp8, torch.device("cpu"))  # FP8's casts compile per shape: evaluation only
    assert len(grads) == 1 and len(evals) == 2
    monkeypatch.setattr(model, "forward", lambda *a, **k: 1 / 0)
    tr.precompile_kernels(model, cfg, torch.device("cpu"))  # an error is the warm-up's to report


@pytest.mark.parametrize("regions", [True, False], ids=["by-region", "whole-model"])
def test_the_first_step_and_evaluation_use_the_warmed_up_graphs(monkeypatch, regions):
    """Compiled either way (the compile_regions knob reaches compile_model), the warm-up compiles every graph the
    run needs: nothing is compiled after it, evaluation included (it runs the model eagerly)."""
    import functools

    import torch._dynamo

    import tinylab.train as tr

    graphs, scopes = [], []
    real, real_compile_model = tr.warm_up, tr.compile_model

    def counted(*a, **k):
        real(*a, **k)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])

    def recorded(net, regions):
        scopes.append(regions)
        return real_compile_model(net, regions)

    torch._dynamo.reset()
    monkeypatch.setattr(tr.torch, "compile", functools.partial(torch.compile, backend="eager"))  # no Inductor
    monkeypatch.setattr(tr, "warm_up", counted)
    monkeypatch.setattr(tr, "compile_model", recorded)
    train("smoke", f"graphs{regions}", num_iterations=3, progress=False, compile=True, compile_regions=regions,
          **TINY)
    assert scopes == [regions]
    assert graphs[0] > 0 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs[0]  # no recompile
    torch._dynamo.reset()


def test_each_train_compiles_its_model_past_dynamos_recompile_limit(monkeypatch):
    """Every model's regions run the same functions, so a notebook training more architectures than Dynamo's
    recompile limit would train the rest eagerly; train() empties Dynamo's caches first (model.forget_compiled).
    The limit is lowered to 2 here, so the third architecture shows it."""
    import torch._dynamo

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, **{**kw, "backend": backend}))
    with torch._dynamo.config.patch(recompile_limit=2):
        for heads in (2, 3, 4):  # a new shape in every region each time
            before = len(graphs)
            train("smoke", f"arch{heads}", num_iterations=1, progress=False, compile=True, n_head=heads,
                  n_kv_head=heads, model_dim=32 * heads, **TINY)
            assert len(graphs) > before, f"the model with {heads} heads ran eagerly"
    torch._dynamo.reset()


def test_data_errors_of_the_second_thread_reach_the_caller_and_write_nothing(monkeypatch):
    import tinylab.train as tr
    from tinylab.loader import LoaderError

    def broken(*a, **k):
        raise LoaderError("the val split is empty: add text")

    monkeypatch.setattr(tr, "make_loaders", broken)
    with pytest.raises(LoaderError, match="val split is empty"):
        train("smoke", "nodata", num_iterations=2, progress=False, **TINY)
    assert not (paths.runs_dir() / "nodata" / "config.json").exists()


def test_a_context_shorter_than_the_sample_prompts_still_saves_its_last_step(tmp_path, monkeypatch):
    """The built-in sample prompts that do not fit are left out; the run is not lost to them."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    train("smoke", "short", num_iterations=2, progress=False, **{**TINY, "sample_every": 1, "sequence_len": 8})
    run = Run.at("short")
    assert checkpoint.read_meta(run.latest_checkpoint())["finished"]
    assert not [r for r in run.metrics.read() if r["kind"] == "sample"]  # every prompt is longer than 8 tokens


def test_fp8_lm_head_knob_reaches_the_loss():
    from tinylab.loss import fp8_supported

    if not fp8_supported("cpu"):
        pytest.skip("this torch has no CPU torch._scaled_mm")
    train("smoke", "bf16", num_iterations=3, progress=False, **TINY)
    train("smoke", "fp8", num_iterations=3, progress=False, fp8_lm_head=True, **TINY)
    a, b = losses("bf16"), losses("fp8")
    # the FP8 GEMMs (CPU torch._scaled_mm) compute the logits and gradients: the curves differ, within FP8's error
    assert a != b and max(abs(a[s] - b[s]) / a[s] for s in a) < 0.02


def test_a_failed_build_stops_the_data_thread_before_returning(monkeypatch):
    import threading
    import time

    import tinylab.train as tr
    from tinylab import data

    reading, rounds = threading.Event(), []

    def slow_tokenizer(*a, **k):  # reads the sample's row groups for ~20 s unless stopped
        shard = data.list_shards("sample", "train")[0]
        for _ in range(2000):
            for _ in data.iter_row_groups(shard):
                reading.set()
                rounds.append(1)
                time.sleep(0.01)

    def failing_build(self, data=None):  # the compiled forward's build, after the data thread started
        reading.wait(10)
        raise RuntimeError("no room for the model")

    monkeypatch.setattr(tr, "load_tokenizer", slow_tokenizer)
    monkeypatch.setattr(tr.Trainer, "build", failing_build)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="no room"):
        train("smoke", "stopped", num_iterations=2, progress=False, **TINY)
    assert time.perf_counter() - t0 < 5 and 0 < len(rounds) < 500
    assert not [t for t in threading.enumerate() if t.name == "tinylab-data"]  # nothing writes on after it
    assert not list(paths.home().rglob("*.tmp"))


def test_cli_prints_rounding_once_and_finishes(capsys):
    rc = main(["--preset", "smoke", "--run", "cli", "--num-iterations", "2", "--device-batch-size", "3",
               "--total-batch-size", "1000", "--eval-tokens", "384", "--sample-every", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("not a multiple") == 1 and "using 1,152" in out and "done: 2 steps" in out
    assert out.count("time: ") == 1 and ", steps " in out
    assert cli(main, ["--preset", "smoke", "--run", "cli", "--num-iterations", "2", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_below_the_checkpoint_step_is_refused_and_equal_is_finished():
    train("smoke", "short", num_iterations=2, progress=False, **TINY)

    def no_training(rec):  # before the fix the loop ran past the end forever
        assert rec["kind"] != "train", "trained past num_iterations"

    with pytest.raises(TrainError, match=r"already at step 2 \(1,024 tokens\); pass --num-iterations >= 2 "
                                         r"\(or --target-tokens >= 1024\)"):
        train("smoke", "short", num_iterations=1, resume=True, progress=False, callback=no_training, **TINY)
    assert train("smoke", "short", num_iterations=2, resume=True, progress=False, callback=no_training,
                 **TINY)["step"] == 2


def test_a_resume_refuses_knobs_it_could_only_record():
    train("smoke", "kept", num_iterations=2, progress=False, **TINY)
    for knob in (dict(seed=7), dict(tokenizer_max_chars=1_000_000)):
        with pytest.raises(TrainError, match=f"started with {next(iter(knob))}=.*recorded but not used"):
            train("smoke", "kept", num_iterations=3, resume=True, progress=False, **TINY, **knob)
    assert train("smoke", "kept", num_iterations=3, resume=True, progress=False, **TINY)["step"] == 3


def test_resume_uses_the_requested_learning_rates():
    train("smoke", "relr", num_iterations=2, progress=False, **TINY)
    train("smoke", "relr", num_iterations=3, resume=True, matrix_lr=0.05, progress=False, **TINY)
    cfg = json.loads((paths.runs_dir() / "relr" / "config.json").read_text())
    assert cfg["optim"]["matrix_lr"] == 0.05 and cfg["derived"]["lrs"]["matrix"] == pytest.approx(0.05)
    ckpt = checkpoint.read_meta(Run.at("relr").latest_checkpoint())
    muon = ckpt["optimizers"][1]["param_groups"][0]
    assert muon["initial_lr"] == pytest.approx(0.05)


def test_a_run_started_from_scratch_drops_stale_metrics_and_tokenizer():
    from tinylab.tokenizer import Tokenizer, get_tokenizer, train_tokenizer

    run_dir = paths.runs_dir() / "stale"
    texts = ["the cat sat on the mat. " * 20, "a dog ate the hat! " * 20]
    train_tokenizer(texts, 265, progress=False).save(run_dir / "tokenizer")
    (run_dir / "metrics.jsonl").write_text(json.dumps(dict(kind="train", step=99, loss=9.0)) + "\n")
    train("smoke", "stale", num_iterations=1, resume=True, progress=False, **TINY)  # nothing to resume
    assert 99 not in [r["step"] for r in metrics("stale")]
    assert Tokenizer.load(run_dir / "tokenizer").hash == get_tokenizer(get_preset("smoke")).hash


def test_overwrite_under_ddp_waits_for_rank_0_before_looking_for_checkpoints(monkeypatch):
    import tinylab.train as T

    events = []

    class Stop(Exception):
        pass

    def barrier():
        events.append("barrier")
        raise Stop

    monkeypatch.setattr(T, "setup_distributed", lambda device: Dist(1, 2, torch.device("cpu"), False))
    monkeypatch.setattr(T.dist, "barrier", barrier)
    monkeypatch.setattr(T.Run, "latest_checkpoint", lambda run: events.append("latest_checkpoint"))
    with pytest.raises(Stop):
        train("smoke", "ddp-overwrite", overwrite=True, progress=False, **TINY)
    assert events == ["barrier"]


def test_a_shard_downloaded_later_changes_neither_the_val_bpb_nor_the_resume(tmp_path, monkeypatch):
    """num_shards 2 with 3 shards present trains on the first and validates on the second; it used to validate on
    whatever sorted last, so one more shard gave the same checkpoint another val bpb and refused --resume."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinylab.eval import evaluate

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    (tmp_path / "fineweb").mkdir()
    texts = pq.read_table(paths.SAMPLE_DIR / "shard_00001.parquet").column("text").to_pylist()
    for i in range(4):
        pq.write_table(pa.table({"text": texts[i * 40:(i + 1) * 40]}), tmp_path / "fineweb" / f"shard_{i:05d}.parquet")
    later = tmp_path / "fineweb" / "shard_00003.parquet"
    later.rename(tmp_path / "later.parquet")
    knobs = dict(TINY, corpus="fineweb", num_shards=2)
    summary = train("smoke", "two", num_iterations=3, progress=False, **knobs)
    before = evaluate("two", "bpb", write=False).val_bpb
    assert before == pytest.approx(summary["val_bpb"], abs=1e-6)
    (tmp_path / "later.parquet").rename(later)  # one more shard downloaded
    assert evaluate("two", "bpb", write=False).val_bpb == before
    assert train("smoke", "two", num_iterations=4, resume=True, progress=False, **knobs)["step"] == 4
    with pytest.raises(TinylabError, match="num_shards is 5 .* has 4 shard.* download -n 5`, or pass --num-shards 4"):
        train("smoke", "five", num_iterations=1, progress=False, **dict(knobs, num_shards=5))


def test_evaluation_reuses_one_val_loader_and_repeats_exactly(monkeypatch):
    from tinylab import loader as L
    from tinylab.evaluate import evaluate_bpb
    from tinylab.tokenizer import get_tokenizer
    from tinylab.train import make_loaders

    preset = resolve("smoke", dict(eval_tokens=1024, device_batch_size=2))
    tok = get_tokenizer(preset)
    built = []
    init = L.TokenLoader.__init__

    def counting_init(self, tokens, split, *a, **kw):
        built.append(split)
        init(self, tokens, split, *a, **kw)

    monkeypatch.setattr(L.TokenLoader, "__init__", counting_init)
    train_loader, val = make_loaders(preset, tok, Dist(0, 1, torch.device("cpu"), False), progress=False)
    torch.manual_seed(0)
    model = build_model(preset.model)
    token_bytes = torch.as_tensor(tok.token_bytes, dtype=torch.int64)
    a, b = evaluate_bpb(model, val(), token_bytes), evaluate_bpb(model, val(), token_bytes)
    assert built == ["train", "val"]  # one val loader, not one per eval
    fresh = evaluate_bpb(model, L.val_batches(preset, tok, batch_size=2, progress=False), token_bytes)
    assert a == b == fresh


def test_train_calls_train_step_once_per_step(monkeypatch):
    import tinylab.train as T

    returned = []

    def spy(*a, **kw):
        returned.append(T_train_step(*a, **kw))
        return returned[-1]

    T_train_step = T.train_step
    monkeypatch.setattr(T, "train_step", spy)
    train("smoke", "step-fn", num_iterations=2, progress=False, **dict(TINY, total_batch_size=1024))  # grad_accum 4
    assert [r.item() for r in returned] == pytest.approx([losses("step-fn")[1], losses("step-fn")[2]], abs=1e-6)


def test_cli_preset_defaults_to_tinylab_preset(monkeypatch, capsys):
    import tinylab.train as T

    seen = {}
    monkeypatch.setenv("TINYLAB_PRESET", "smoke")
    monkeypatch.setattr(T, "train", lambda preset, run, **kw: seen.update(preset=preset, run=run) or
                        dict(step=0, tokens=0, val_bpb=None, run_dir="x", time=dict(total=0.0)))
    assert main(["--no-progress"]) == 0
    assert seen == dict(preset="smoke", run="smoke")
    monkeypatch.setenv("TINYLAB_PRESET", "nope")
    assert cli(main, ["--no-progress"]) == 2 and "unknown preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "$TINYLAB_PRESET" in capsys.readouterr().out


def test_out_of_memory_says_which_batch_to_use_and_keeps_the_checkpoint(monkeypatch):
    import tinylab.train as T

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(T, "train_step", oom)
    with pytest.raises(OutOfMemoryError) as err:
        T.train("smoke", "oom", num_iterations=3, progress=False, **TINY)
    msg = str(err.value)
    assert "out of memory at device batch 2 × 128" in msg and "--device-batch-size that divides" in msg
    assert "Last good checkpoint: none" in msg


def test_cli_accepts_torchruns_double_dash(monkeypatch):
    """`torchrun ... -m tinylab.train -- --run X`: the flags after `--` are ours."""
    import tinylab.train as T

    seen = {}
    monkeypatch.setattr(T, "train", lambda preset, run, **kw: seen.update(preset=preset, run=run, **kw) or
                        dict(step=0, tokens=0, val_bpb=None, run_dir="x", time=dict(total=0.0)))
    assert main(["--", "--preset", "smoke", "--run", "ddp", "--depth", "3", "--no-progress"]) == 0
    assert (seen["preset"], seen["run"], seen["depth"]) == ("smoke", "ddp", 3)


def test_the_command_ends_without_teardown_and_loses_nothing(tmp_path):
    """`python -m tinylab.train` ends through exit_now (os._exit, no interpreter teardown): its last lines are
    printed, the run's files are complete, and a bad input still ends with one error line and status 2."""
    import subprocess
    import sys

    env = dict(os.environ, TINYLAB_HOME=str(tmp_path), TINYLAB_DEVICE="cpu")
    env.pop("PYTHONUNBUFFERED", None)  # stdout into a pipe is then block-buffered: only a flush gets the lines out
    cmd = [sys.executable, "-m", "tinylab.train", "--preset", "smoke", "--run", "cli", "--no-progress",
           "--num-iterations", "2", "--device-batch-size", "2", "--total-batch-size", "256", "--eval-tokens", "256"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2].startswith("done: 2 steps") and done.stdout.splitlines()[-1].startswith("time:")
    run = Run(tmp_path / "runs" / "cli", "cli")
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert checkpoint.read_meta(run.latest_checkpoint())["finished"]
    assert {r["kind"] for r in records if r["step"] == 2} == {"train", "eval", "sample"}
    bad = subprocess.run(cmd[:5] + ["--depth", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert (bad.returncode, bad.stderr.count("\n"), bad.stderr[:7]) == (2, 1, "error: ")


EARLY = ["--preset", "smoke", "--no-progress", "--num-iterations", "2", "--device-batch-size", "2",
         "--total-batch-size", "256", "--eval-tokens", "256", "--sample-every", "0"]


def test_the_command_starts_its_data_child_early_and_the_trainer_adopts_it(monkeypatch, tmp_path):
    """`python -m tinylab.train` starts the data child before it imports torch (launch.start_data_early); the
    trainer then waits for that child instead of starting a second one."""
    import tinylab.train as tr

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    started = []
    for module in (prepare, tr):
        real = module.start_data_child
        monkeypatch.setattr(module, "start_data_child", lambda *a, real=real: started.append(a) or real(*a))
    launch.start_data_early(EARLY + ["--run", "early"])
    assert prepare.has_early() and len(started) == 1
    assert main(EARLY + ["--run", "early"]) == 0
    assert len(started) == 1 and not prepare.has_early()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "tokenizer", "tokens"]


def test_a_data_child_started_for_another_config_is_stopped_not_adopted(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    prepare.start_early(resolve("smoke", {}), progress=False)
    child = prepare._early[1]
    assert prepare.adopt_early(resolve("smoke", dict(vocab_size=300)), False) is None
    assert child.poll() is not None and not prepare.has_early()


@pytest.mark.parametrize("argv", [["--depth", "0"], ["--preset", "nosuch"], ["--help"], ["--resume"],
                                  ["--", "--preset", "smoke", "--resume"]])
def test_the_early_start_leaves_bad_arguments_and_resumes_to_main(argv, capsys, monkeypatch):
    """Nothing is started and nothing printed: main() parses the same arguments and reports them."""
    monkeypatch.setattr(prepare, "start_data_child", lambda *a: pytest.fail("a child was started"))
    launch.start_data_early(argv if argv[0] == "--" else ["--preset", "smoke"] + argv)
    assert not prepare.has_early() and capsys.readouterr() == ("", "")


def test_under_torchrun_no_rank_starts_an_early_child(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(prepare, "start_data_child", lambda *a: pytest.fail("a child was started"))
    launch.start_data_early(EARLY + ["--run", "ddp"])
    assert not prepare.has_early()


def test_a_command_that_fails_before_its_data_stops_the_early_child(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    launch.start_data_early(EARLY + ["--run", "baddev", "--device", "nosuch"])
    child = prepare._early[1]
    assert cli(main, EARLY + ["--run", "baddev", "--device", "nosuch"]) == 2
    assert "unknown device 'nosuch'" in capsys.readouterr().err
    assert child.poll() is not None and not prepare.has_early()


def test_no_early_child_for_a_run_the_command_will_refuse(tmp_path, monkeypatch):
    """A run with a checkpoint, without --resume or --overwrite, is refused before any data is due: no child. With
    --overwrite it is started over, so its child starts."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    assert main(EARLY + ["--run", "taken"]) == 0
    launch.start_data_early(EARLY + ["--run", "taken"])
    assert not prepare.has_early()
    launch.start_data_early(EARLY + ["--run", "taken", "--overwrite"])
    assert prepare.has_early()
    prepare.stop_early()


@pytest.mark.parametrize("status", [0, 2])
def test_exit_now_skips_the_exit_handlers_only_after_a_finished_run(status):
    """A finished run (0) ends without teardown; a failed or stopped one exits normally, so that exit handlers
    (wandb's, which records how the run ended) still run."""
    import subprocess
    import sys

    code = ("import atexit; atexit.register(lambda: print('handlers ran', flush=True)); "
            f"from tinylab.train import exit_now; exit_now({status})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, "handlers ran" in done.stdout) == (status, status != 0)


def test_live_plot_skips_a_half_written_last_line(tmp_path):
    from tinylab.widgets.live import LiveLossPlot

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(dict(kind="eval", step=0, tokens=0, val_bpb=3.5)) + "\n" + '{"kind": "tra')
    live = LiveLossPlot()
    live.load(path)
    assert live.eval == [(0, 3.5)] and live.train == []


def test_meter_counts_the_time_the_device_still_needs_for_the_interval():
    """On CUDA .item() waits for the queued steps: their time belongs to the interval being read."""
    import time as clock

    from tinylab.train import Meter

    class QueuedLoss(float):  # a loss whose steps the device finishes 0.2 s after they were queued
        def __truediv__(self, n):
            return QueuedLoss(float(self) / n)

        def item(self):
            clock.sleep(0.2)
            return float(self)

    m = Meter(tokens=0)
    m.add(QueuedLoss(3.0))
    loss, tok_s, seconds = m.read(tokens=1000, world=1)
    assert loss == 3.0 and seconds >= 0.2 and tok_s <= 1000 / 0.2


def test_meter_leaves_the_compiling_step_out_unless_it_is_alone():
    import time as clock

    from tinylab.train import Meter

    m = Meter(tokens=0)
    clock.sleep(0.2)
    m.exclude(seconds=0.2, tokens=10)  # a step of 10 tokens that took 0.2 s (compiling), in an interval of three
    for _ in range(3):
        m.add(torch.tensor(2.0))
    loss, tok_s, seconds = m.read(tokens=30, world=1)
    assert loss == 2.0 and seconds < 0.1 and tok_s * seconds == pytest.approx(20)
    m.add(torch.tensor(1.0))
    m.exclude(seconds=0.0, tokens=10)  # alone in its interval (log_every=1): it is what there is to measure
    loss, tok_s, seconds = m.read(tokens=40, world=1)
    assert loss == 1.0 and tok_s * seconds == pytest.approx(10)
