"""Pretraining loop: one library function for notebooks, the same function behind the CLI.

    python -m tinylab.train --preset ittybitty --run my-run [--depth 6 --matrix-lr 0.03 ...]
    torchrun --standalone --nproc_per_node=2 -m tinylab.train -- --preset ittybitty --run my-run   # DDP
    python -m tinylab.train --preset ittybitty --run my-run --resume               # after a crash

train() runs five phases, each a function below, in this order:
1. resolve   preset + overrides -> TrainConfig, every knob validated; nothing written yet
2. prepare   process group, the run directory locked, plan (steps, batch layout) and the resume point
             checked (architecture, step); still nothing written
3. build     model, optimizers, checkpoint state, compiled forward (warmed up on a dummy batch, tinylab's
             own kernels compiled on a thread alongside), and, on a second thread meanwhile, the tokenizer
             (trained if missing, by a child process when the run compiles or the command started one
             before importing torch; a resumed run's checked against its hash) and the loaders over the
             pre-tokenized corpus; only once all of that succeeded are config.json and metrics.jsonl
             (re)written: a failed resume changes nothing
4. loop      on schedule: evaluate, sample, score (CORE, probes), save (written on a thread while the
             next steps run); then one optimizer step; a log line every log_every
5. finish    the summary record, wandb, the process group

Design: DistributedDataParallel with no_sync() on accumulation micro-steps; every rank runs the
full (replicated) optimizer step on the all-reduced gradients. bf16 autocast and torch.compile
on CUDA, fp32 elsewhere. The loss is read back to the host only every log_every steps so the GPU
never waits on Python.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # the command: its data child starts now, before torch's import (tinylab.launch)
    from tinylab.launch import start_data_early

    start_data_early(sys.argv[1:])

import importlib
import math
import os
import shutil
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from . import calc, checkpoint, launch
from .config import TrainConfig, knob_arguments
from .devices import autocast as device_autocast, memory_bytes, pick_device
from .errors import RunFailedError, TinylabError, cli
from .eval import cost, measure
from .data import ReadStopped, stop_requested, stoppable
from .evaluate import evaluate_bpb
from .loss import fp8_supported
from .model import build_model, compile_model, forget_compiled
from .optim import apply_schedule, setup_optimizers
from .prepare import adopt_early, has_early, start_data_child, stop_child, stop_early
from .presets import resolve
from .run import CHECKPOINT_MARKER, Run, RunError
from .schedule import RunPlan, lr_multiplier, muon_momentum

SAMPLE_PROMPTS = ("The capital of France is", "Once upon a time,", "The meaning of life is")


class TrainError(TinylabError, ValueError):
    """Bad training options or a run-directory conflict; the message says what to do."""


class NonFiniteLossError(RunFailedError):
    """The loss became NaN/inf; the last good checkpoint is kept and named in the message."""


class OutOfMemoryError(RunFailedError):
    """CUDA ran out of memory; the message names a batch that fits and the checkpoint to resume from."""


# ------------------------------------------------------------------------------- phase 2: prepare

@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    own_group: bool  # we initialised the process group, so we destroy it

    @property
    def master(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device=None) -> Dist:
    """Rank, world size and device from torchrun's environment; rank 0 of 1 without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, pick_device(device), False)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev, ours)


@dataclass
class Setup:
    """What a run is before any tensor exists: config, directory, plan, resume point; the tokenizer joins it
    in Trainer, loaded (or trained) alongside the build."""
    cfg: TrainConfig
    run: Run
    plan: RunPlan
    dist: Dist
    tokenizer: object = None                  # set by Trainer once loaded (or trained) alongside the build
    resume_from: Path | None = None
    meta: dict = field(default_factory=dict)  # the checkpoint's meta when resuming
    bundle: Path | None = None                # CORE's eval bundle (rank 0, core_every > 0)
    overwrite: bool = False                   # the old run is deleted once this one has built


class Clock:
    """Wall seconds per phase of one train() call, for the summary's breakdown of where the time went.

    On CUDA a phase starts and ends with a synchronize: the steps still queued on the GPU when an evaluation
    begins are billed to the steps, not to the evaluation (the loop itself never synchronizes). A background
    phase runs on another thread alongside the main one's: it is reported apart and never synchronizes."""

    def __init__(self):
        self.t0, self.device, self.spent = time.perf_counter(), None, 0.0
        self.seconds: dict[str, float] = {}
        self.background: dict[str, float] = {}

    def sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str, background: bool = False):
        if not background:
            self.sync()
        t0 = time.perf_counter()
        try:
            yield
            if not background:
                self.sync()
        finally:
            seconds = time.perf_counter() - t0
            if background:
                self.background[name] = self.background.get(name, 0.0) + seconds
            else:
                self.record(name, seconds)

    def record(self, name: str, seconds: float) -> None:
        self.spent += seconds
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def breakdown(self) -> dict:
        """{phase: seconds}, other (the rest of the train() call, imports aside) and total; these add up to
        total. The background phases, if any, under "alongside" (their time overlaps the others')."""
        total = time.perf_counter() - self.t0
        alongside = dict(alongside=dict(self.background)) if self.background else {}
        return dict(self.seconds, other=total - self.spent, total=total, **alongside)


def describe_time(breakdown: dict) -> str:
    """`290.1 s: build 4.4, compile 12.0, data 7.2, eval 12.0, ..., steps 237.1, other 3.0 (alongside build
    to data: tokenizer 15.7, tokens 7.0)`."""
    def listing(d):
        return ", ".join(f"{k} {v:.1f}" for k, v in d.items() if k not in ("total", "alongside"))
    extra = f" (alongside build to data: {listing(breakdown['alongside'])})" if breakdown.get("alongside") else ""
    return f"{breakdown['total']:.1f} s: {listing(breakdown)}{extra}"


def load_tokenizer(cfg: TrainConfig, run: Run, resume_meta: dict, d: Dist, progress: bool):
    """A resumed run's own tokenizer (checked against its checkpoint), else the preset's, trained on rank 0 first."""
    from .tokenizer import get_tokenizer

    if resume_meta:
        return checkpoint.load_tokenizer(run, resume_meta["tokenizer"])
    tokenizer = get_tokenizer(cfg, progress=progress) if d.master else None
    d.barrier()
    return tokenizer or get_tokenizer(cfg, progress=False)


def check_resume(run: Run, ckpt: Path, cfg: TrainConfig, plan: RunPlan) -> dict:
    """The checkpoint's meta, once it is known to fit this config (architecture, step count)."""
    meta = checkpoint.read_meta(ckpt)
    if meta.get("imported"):  # its checkpoint holds weights only (import_nanochat): no optimizer state to go on from
        raise TrainError(f"run {run.name!r} was imported from nanochat without its optimizer state: it can be "
                         f"evaluated, sampled and exported, not resumed; train a new run (another --run name)")
    checkpoint.check_resumable(ckpt, meta)
    if meta["model"] != cfg.model.to_dict():
        from .config import GPTConfig
        raise TrainError(f"run {run.name!r} was trained as {GPTConfig.from_dict(meta['model']).describe()}, "
                         f"not {cfg.model.describe()}: resume with the same architecture knobs or use a new --run name")
    if plan.num_iterations < meta["step"]:
        raise TrainError(f"run {run.name!r} is already at step {meta['step']} ({plan.tokens_at(meta['step']):,} "
                         f"tokens); pass --num-iterations >= {meta['step']} (or --target-tokens >= "
                         f"{plan.tokens_at(meta['step'])}) or start a new run")
    try:
        saved = run.read_config()
    except RunError:  # an older or damaged config.json: nothing to compare with
        saved = {}
    check_step_tokens(run, plan, saved)
    check_kept_knobs(run, cfg, saved)
    return meta


KEPT_ON_RESUME = {  # knobs a resume cannot honour, and why: config.json would record a value the run never used
    "seed": "the resume restores the run's RNG state and weights",
    "tokenizer_max_chars": "the run keeps the tokenizer it was trained with",
}


def check_kept_knobs(run: Run, cfg: TrainConfig, saved: dict) -> None:
    """saved: the run's config.json ({} when unreadable: nothing to compare with)."""
    now = cfg.flat()
    for name, why in KEPT_ON_RESUME.items():
        was = next((g[name] for g in saved.values() if isinstance(g, dict) and name in g), None)
        new = now[name]
        if was is not None and was != new:
            raise TrainError(f"run {run.name!r} was started with {name}={was}, and {why}: {name}={new} would be "
                             f"recorded but not used; resume without it, or start a new run for it")


def check_step_tokens(run: Run, plan: RunPlan, saved: dict) -> None:
    """A resumed run keeps its tokens per step: the loader's position, the token counts and the schedule assume
    them. A device batch that rounds the step to another size is refused, with the flags that keep it. saved: the
    run's config.json ({} when unreadable)."""
    try:
        was = saved["derived"]["total_batch_size"]
    except (KeyError, TypeError):  # an older or damaged config.json: nothing to compare with
        return
    if plan.batch.total_batch_size != was:
        raise TrainError(f"run {run.name!r} steps {was:,} tokens at a time, but device_batch_size "
                         f"{plan.batch.device_batch_size} makes a step of {plan.batch.total_batch_size:,}: "
                         f"{same_step_advice(plan.batch, was)}")


def same_step_advice(bp, total: int) -> str:
    """How to resume at a smaller device batch with `total` tokens per step (bp: the batch plan asked for)."""
    rows = total // (bp.seq_len * bp.world_size)
    fits = [b for b in range(1, min(rows + 1, bp.device_batch_size)) if rows % b == 0]  # smaller, and dividing
    return (f"pass --resume with --total-batch-size {total} and a --device-batch-size that divides its {rows} rows "
            f"per step (e.g. {', '.join(map(str, reversed(fits[-4:] or [1])))})")


def core_bundle(cfg: TrainConfig) -> Path | None:
    """CORE's eval bundle if core_every asks for CORE: fetched, or refused, before training, not hours into it."""
    if not cfg.eval.core_every:
        return None
    from . import core

    try:
        bundle = core.ensure_bundle()
        core.load_tasks(bundle)
    except TinylabError as e:
        raise TrainError(f"core_every={cfg.eval.core_every} needs CORE's eval bundle: {str(e).rstrip('.')}. Or train "
                         f"without CORE: core_every=0") from None
    return bundle


def check_memory(cfg: TrainConfig, plan: RunPlan, device) -> None:
    """Refuse a model whose fp32 weights, gradients and optimizer state alone exceed the device's memory,
    before allocating any of it (with overcommitted memory an allocation may succeed and then thrash)."""
    v = calc.vram_estimate(cfg.model, 0)
    need = v["weights"] + v["gradients"] + v["optimizer_muon"] + v["optimizer_adamw"]
    have = memory_bytes(device)
    if have is not None and need > have:
        raise OutOfMemoryError(f"the model ({plan.params:,} parameters: {cfg.model.describe()}) does not fit in the "
                               f"memory of {device}: its weights, gradients and optimizer state alone take "
                               f"{need / 2 ** 30:,.1f} GiB of {have / 2 ** 30:,.1f}; lower depth or model_dim "
                               f"(`python -m tinylab.calc` shows the sizes)")


def prepare(cfg: TrainConfig, run: Run, d: Dist, *, resume: bool, overwrite: bool, progress: bool) -> Setup:
    """Phase 2: everything that can fail before anything is written (see the module docstring)."""
    bundle = core_bundle(cfg) if d.master else None
    # --overwrite deletes the old run only once the new one has built (Trainer.write_run_files): a start that fails
    # on its config, memory, data or tokenizer leaves the old run as it was
    damaged = [] if overwrite else run.incomplete_checkpoints()
    if damaged:  # starting over (or from an older step) would silently drop the metrics they belong to
        raise TrainError(f"{damaged[-1]} has no {CHECKPOINT_MARKER}: the checkpoint is damaged; delete "
                         f"{'it' if len(damaged) == 1 else f'it and {len(damaged) - 1} more like it'} to resume from "
                         f"an older one (or start over), or pass --overwrite to delete the run")
    taken = run.refuses_fresh_start(resume, overwrite)
    if taken is not None:
        raise TrainError(f"run {run.name!r} already has a checkpoint ({taken.name}) in {run.dir}: pass resume=True "
                         f"(--resume) to continue it, overwrite=True (--overwrite) to start over, or pick a new run name")
    ckpt = None if overwrite else run.latest_checkpoint()
    if resume and ckpt is None and d.master:
        print(f"no checkpoint for run {run.name!r} yet: starting it from scratch")
    plan = RunPlan.of(cfg, d.world)
    check_memory(cfg, plan, d.device)
    meta = check_resume(run, ckpt, cfg, plan) if resume and ckpt is not None else {}
    if d.master and plan.batch.rounded:
        print(plan.batch.note())
    return Setup(cfg, run, plan, d, None, ckpt if meta else None, meta, bundle, overwrite)


# ------------------------------------------------------------------------------- phase 3: build

def load_data(s: Setup, clock: Clock, progress: bool, background: bool = False):
    """(tokenizer, train loader, val factory): the run's tokenizer, loaded or trained, and loaders over its
    pre-tokenized corpus (tokenized now if it is not yet)."""
    with clock.phase("tokenizer", background):
        tokenizer = load_tokenizer(s.cfg, s.run, s.meta, s.dist, progress)
    if tokenizer.vocab_size != s.cfg.model.vocab_size:
        raise TrainError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} tokens but the model's vocab_size "
                         f"is {s.cfg.model.vocab_size}: they must match")
    with clock.phase("tokens", background):
        return (tokenizer, *make_loaders(s.cfg, tokenizer, s.dist, s.meta.get("loader"), progress))


def load_data_aside(s: Setup, clock: Clock, progress: bool):
    """load_data for the data thread of a fresh run that compiles (or whose command started the child already), the
    files made first by tokens.prepare_tokens in a child process (tinylab.prepare). Training the tokenizer and
    pre-tokenizing turn documents into Python strings, which holds the GIL, so on a thread they slowed the compile
    they ran alongside (docs/benchmarks.md §3). Then load_data finds the files and only opens them; if the child
    failed, load_data meets the same failure and raises its error. Asked to stop (Background.cancel), it stops the
    child and loads nothing."""
    with clock.phase("files", background=True):
        try:  # the command's own if it started one (tinylab.launch), else a new one
            child = adopt_early(s.cfg, progress) or start_data_child(s.cfg, progress)
        except OSError:  # no interpreter to start (an embedded Python): load_data does the work
            child = None
        if child is not None:
            while child.poll() is None and not stop_requested():
                time.sleep(0.1)
            stop_child(child)
    if stop_requested():
        raise ReadStopped("the run stopped before its data was ready")
    return load_data(s, clock, progress, True)


class Background:
    """fn(*args) on a daemon thread; result() waits and returns its value or raises its exception. cancel()
    stops its shard reading at the next row group (tinylab.data.stoppable) and waits, so a failed train()
    leaves no thread writing under TINYLAB_HOME after it returns (a notebook's kernel outlives the call)."""

    def __init__(self, fn, *args, name: str = "tinylab-data"):
        self.value = self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True, name=name)
        self.thread.start()

    def _run(self, fn, *args):
        with stoppable(self.stop):
            try:
                self.value = fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread by result()
                self.error = e

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> None:
        self.stop.set()
        self.thread.join()


def make_loaders(cfg: TrainConfig, tokenizer, d: Dist, state=None, progress=True):
    """(train loader, val factory): tinylab.loader over the pre-tokenized corpus, tokenized by rank 0 first.

    The val loader is built once; each call of the factory rewinds it for one identical eval pass."""
    from .loader import token_batches, val_pass

    def get(split, **kw):
        return token_batches(cfg, tokenizer, split, device=d.device, rank=d.rank, world_size=d.world,
                             progress=progress and d.master, **kw)

    if not d.master:
        d.barrier()  # rank 0 pretokenizes first
    train_loader, val_loader = get("train", state=state), get("val")
    if d.master:
        d.barrier()
    return train_loader, lambda: val_pass(val_loader, cfg.eval.eval_tokens)


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    return calc.gpu_peak_flops(torch.cuda.get_device_name(device))  # datasheet dense bf16, as nanochat


def run_samples(model, tokenizer, max_tokens=32) -> list[str]:
    """Completions of the SAMPLE_PROMPTS that fit the model's context (a model of a few positions may have none)."""
    from .engine import complete

    prompts = [(p, tokenizer.encode(p, prepend_bos=True)) for p in SAMPLE_PROMPTS]
    return [p + complete(model, tokenizer, p, temperature=0.8, top_k=50, max_tokens=max_tokens, seed=42 + i,
                         prompt_ids=ids).text
            for i, (p, ids) in enumerate(prompts) if len(ids) <= model.config.sequence_len]


def train_step(net, optimizers, batches, grad_accum: int, *, autocast, grad_clip: float, model) -> torch.Tensor:
    """One optimizer step: grad_accum micro-steps of next(batches), then clip, step, zero the grads.

    net is what runs forward (model, DDP, or either compiled: model.compile_model); model owns the parameters.
    Under DDP all micro-steps but the last run in no_sync(), so gradients are all-reduced once.
    The caller sets the lr / momentum first (optim.apply_schedule). Returns the step's mean
    micro-batch loss as a detached device tensor (no host sync), e.g. for tinylab.bench.
    """
    no_sync = getattr(net, "no_sync", None)  # DDP's (also through torch.compile's wrapper or CompiledRegions)
    total = None
    for micro in range(grad_accum):
        x, y = next(batches)
        with no_sync() if no_sync is not None and micro < grad_accum - 1 else nullcontext():
            with autocast:
                loss = net(x, y)
            (loss / grad_accum).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return total / grad_accum


def start_compile_workers(device) -> None:
    """Start Inductor's compile workers for a GPU, then import torch.compile's compiler (~6 s of pure Python),
    before the warm-up. Left to itself, Inductor starts its workers at the first compile, and they take ~8 s to
    come up (a sidecar process imports torch, then forks a worker per core); meanwhile it compiles its Triton
    kernels one at a time in this process. Started here, they come up during the imports (docs/benchmarks.md §3)."""
    if device.type == "cuda":
        from torch._inductor.async_compile import maybe_warm_pool  # most of Inductor's imports

        maybe_warm_pool()  # what Inductor's backend calls at its first compile (TORCH_WARM_POOL=0 still turns it off)
    importlib.import_module("torch._inductor.compile_fx")


def release_compile_workers() -> None:
    """Let Inductor's compile workers (a process per core) go once the warm-up has compiled every graph, freeing
    their memory, rather than at exit, which they made ~1 s longer (docs/benchmarks.md §3). The pool is quiesced,
    not shut down: that returns at once (a shutdown waited ~0.8 s for the workers to exit). Its sidecar, one idle
    process, stays for the life of this one and starts the workers again for a later compile."""
    from torch._inductor import async_compile

    pools = list(getattr(async_compile, "_pool_set", ()))
    if pools and all(hasattr(pool, "quiesce") for pool in pools):
        try:
            for pool in pools:
                pool.quiesce()
            return
        except (RuntimeError, OSError):  # a sidecar that died meanwhile: the shutdown below tidies up after it
            pass
    async_compile.shutdown_compile_workers()  # other pools, or a torch without quiesce; a later compile starts anew


def dummy_batch(rows: int, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of zeros, built as TokenLoader.to_batch builds a batch: two views of one buffer, y one token in.
    Passing one tensor twice would compile graphs guarded on `idx is targets`, which no real batch passes."""
    buf = torch.zeros(rows * T + 1, dtype=torch.int64, device=device)
    return buf[:-1].view(rows, T), buf[1:].view(rows, T)


def warm_up(net, model, cfg: TrainConfig, device, autocast) -> None:
    """Compile the training graphs (forward and backward) on a dummy batch of the real shapes and dtypes, so the
    first step finds them compiled. The gradients are dropped and nothing else changes: no optimizer step, no
    random numbers drawn. Evaluation has nothing to compile: it runs the model eagerly (Trainer.build_forward)."""
    with autocast:
        loss = net(*dummy_batch(cfg.batch.device_batch_size, cfg.model.sequence_len, device))
    loss.backward()
    model.zero_grad(set_to_none=True)


def precompile_kernels(model, cfg: TrainConfig, device) -> None:
    """Compile tinylab's own Triton kernels ahead, on a thread, while torch.compile's imports and the warm-up run:
    one eager training micro-batch and one evaluation batch, each of a single sequence. Else the warm-up would
    compile them one after another (~1.6 s), then the first evaluation its own (~0.6 s) (docs/benchmarks.md §3).

    Triton compiles a kernel once per signature class (dtypes, 16-byte alignment, which integers are 1 or divisible
    by 16), and for a sequence_len that is a multiple of 16 one sequence is in the class of a whole batch. The custom
    ops are opaque to torch.compile, so the compiled step launches these same kernels. Triton compiles without the
    GIL. Nothing changes: the gradients are returned, not accumulated, and no random number is drawn. An error is
    left to the warm-up and the evaluation, which meet it too."""
    x, y = dummy_batch(1, cfg.model.sequence_len, device)
    autocast = device_autocast(device)
    try:  # evaluation first: its forward has most of the training forward's kernels, and needs no autograd thread
        with current_device(device):  # a thread starts on cuda:0
            evaluate_bpb(model, [(x, y)], torch.ones(cfg.model.vocab_size, dtype=torch.int64, device=device),
                         autocast)
            if cfg.loop.fp8_lm_head:  # its FP8 casts are torch.compile'd per shape: one sequence would add a compile
                return
            with autocast:
                loss = model(x, y)
            torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def out_of_memory(e: BaseException) -> bool:
    """A failed allocation: CUDA's OutOfMemoryError, or the RuntimeError of torch's CPU allocator."""
    return isinstance(e, torch.OutOfMemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(e)


def out_of_memory_message(cfg: TrainConfig, plan: RunPlan, device, last_checkpoint) -> str:
    """What to do after a CUDA out-of-memory error: the batch that fits by calc.vram, and where to resume."""
    c, bp = cfg.model, plan.batch
    fp8 = cfg.loop.fp8_lm_head and fp8_supported(device)  # where FP8 runs, its copies count
    est = calc.vram_estimate(c, bp.device_batch_size, fp8_lm_head=fp8)["total"] / 2 ** 30
    if device.type == "cuda":
        total = memory_bytes(device)
        have = (f"this GPU has {total / 2 ** 30:.1f} GiB; the estimator's largest batch for it is "
                f"{calc.max_device_batch(c, total, fp8_lm_head=fp8)}")
    else:
        have = "see `python -m tinylab.calc --gpu-mem-gb N` for what fits"
    return (f"out of memory at device batch {bp.device_batch_size} × {c.sequence_len} (estimated {est:.1f} GiB; "
            f"{have}). To continue on the same token stream, {same_step_advice(bp, bp.total_batch_size)}: gradient "
            f"accumulation keeps the step's {bp.total_batch_size:,} tokens. Last good checkpoint: "
            f"{last_checkpoint or 'none'}")


@dataclass
class LoopState:
    """Where the loop is; everything else the loop reads is fixed at build time."""
    step: int = 0
    elapsed: float = 0.0              # seconds of training (evaluations, samples and saves excluded)
    val_bpb: float | None = None      # of the newest evaluation
    loss: float | None = None         # mean train loss over the newest log interval
    resumed_at: int | None = None     # a resumed step was evaluated and saved before the checkpoint


class Meter:
    """Mean loss and tokens/s between two log lines, with pauses (evals, saves) left out of the time."""

    def __init__(self, tokens: int):
        self.t0, self.tokens0, self.loss_sum, self.steps = time.perf_counter(), tokens, None, 0
        self.skipped = (0.0, 0)  # (seconds, tokens) of a step left out of tokens/s

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.steps += 1

    def pause(self, seconds: float) -> None:
        self.t0 += seconds

    def exclude(self, seconds: float, tokens: int) -> None:
        """Leave a step out of tokens/s (the one that compiled); its loss still counts in the mean."""
        self.skipped = (seconds, tokens)

    def read(self, tokens: int, world: int) -> tuple[float, float, float]:
        """(mean loss, tokens/s, seconds) since the last read; starts the next interval."""
        mean = self.loss_sum / self.steps
        if world > 1:
            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        loss = mean.item()  # waits for the GPU: the interval ends when its steps are done, not when they were queued
        skip_s, skip_tokens = self.skipped if tokens - self.tokens0 > self.skipped[1] else (0.0, 0)  # unless alone
        seconds = max(time.perf_counter() - self.t0 - skip_s, 1e-9)
        out = (loss, (tokens - self.tokens0 - skip_tokens) / seconds, seconds)
        self.__init__(tokens)
        return out


class Logger:
    """metrics.jsonl (rank 0 only), plus the notebook's callback and wandb."""

    def __init__(self, run: Run, active: bool, callback=None, wandb_run=None):
        self.run, self.active, self.callback, self.wandb = run, active, callback, wandb_run

    def __call__(self, kind: str, **fields) -> None:
        if not self.active:
            return
        rec = self.run.metrics.write(kind, **fields)
        if self.callback is not None:
            self.callback(rec)
        if self.wandb is not None and kind in ("train", "eval"):
            self.wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=rec["step"])


def run_config(s: Setup, optimizers) -> dict:
    """config.json: the knobs by group, what was derived from them, and where the run ran."""
    bp = s.plan.batch
    derived = dict(params=s.plan.params, flops_per_token=s.plan.flops_per_token, total_batch_size=bp.total_batch_size,
                   grad_accum=bp.grad_accum, num_iterations=s.plan.num_iterations, save_every=s.plan.save_every,
                   lrs={g["name"]: g["initial_lr"] for opt in optimizers for g in opt.param_groups})
    return dict(run=s.run.name, preset=s.cfg.name, **s.cfg.to_dict(), derived=derived,
                tokenizer=dict(name=s.tokenizer.name, hash=s.tokenizer.hash), device=str(s.dist.device),
                world_size=s.dist.world, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def start_wandb(s: Setup, config: dict):
    try:
        import wandb
    except ImportError:
        raise TrainError("--wandb needs the wandb package: pip install wandb") from None
    return wandb.init(project="tinylab", name=s.run.name, config=config, resume="allow")


class Trainer:
    """Phases 3 to 5 of one run: built from a Setup, then loop() and finish()."""

    def __init__(self, s: Setup, clock: Clock, callback=None, progress: bool = True):
        self.s, self.cfg, self.plan, self.d = s, s.cfg, s.plan, s.dist
        self.progress = progress and self.d.master
        self.state, self.clock = LoopState(), clock
        self.writer = checkpoint.CheckpointWriter()
        # On one process the data (tokenizer, pre-tokenized corpus) is prepared on a second thread while this one
        # builds the model and compiles it on a dummy batch; for a fresh run that compiles (or whose command started
        # one), its heavy part in a child process (load_data_aside). Under DDP it comes first: both sides run
        # collectives.
        compiles = self.compiles()
        if compiles:  # an earlier model's graphs, before any thread starts: its kernel launches may use what the
            forget_compiled()  # reset empties
        if self.d.world == 1:
            aside = (compiles or has_early()) and not s.meta and bool(sys.executable)
            data = Background(load_data_aside, s, clock, progress) if aside else None
            if data is None and not compiles:  # no torch.compile imports for it to slow down
                data = Background(load_data, s, clock, progress, True)
            ahead = None
            try:
                self.build_model()
                if compiles:
                    if self.d.device.type == "cuda":  # tinylab's kernels compiled alongside the imports
                        gpu = torch.device("cuda", torch.cuda.current_device())  # the model's: "cuda" means this one
                        ahead = Background(precompile_kernels, self.model, self.cfg, gpu, name="tinylab-precompile")
                    start_compile_workers(self.d.device)  # ~6 s of pure Python, before an in-process data thread
                data = data or Background(load_data, s, clock, progress, True)  # (~13 s alongside one, for the GIL)
                self.build(data)
                with self.clock.phase("data"):
                    s.tokenizer, self.loader, self.val = data.result()
            except BaseException:
                if data is not None:
                    data.cancel()
                raise
            finally:
                if ahead is not None:
                    ahead.result()
        else:
            s.tokenizer, self.loader, self.val = load_data(s, clock, progress)
            self.build_model()
            self.build()
        if self.cfg.eval.probes_every:  # refused before anything of the run is written, not at the first probe
            from .probes import check_context, longest_sentence
            check_context(longest_sentence(s.tokenizer), self.cfg.model.sequence_len)
        self.token_bytes = torch.as_tensor(s.tokenizer.token_bytes, dtype=torch.int64, device=self.d.device)
        self.peak = peak_flops(self.d.device)
        self.log = Logger(s.run, self.d.master, callback, self.write_run_files())

    def build(self, data: Background | None = None) -> None:
        """The compiled forward of the model built, warmed up on one process. A data error already known (e.g. a
        tokenizer that does not match) is raised before the warm-up's compile."""
        with self.clock.phase("build"):
            self.build_forward()
        if data is not None and data.done():
            data.result()
        if self.d.world == 1 and self.compiled:
            with self.clock.phase("compile"), self.memory_guard():
                try:
                    warm_up(self.net, self.model, self.cfg, self.d.device, self.autocast)
                finally:  # a failed warm-up leaves no workers idle in a notebook's kernel either
                    release_compile_workers()

    def build_model(self) -> None:
        """The model and its optimizers, restored from the checkpoint being resumed."""
        with self.clock.phase("build"):
            self._build_model()
            if self.s.meta:
                self.restore()

    def _build_model(self) -> None:
        cfg, device = self.cfg, self.d.device
        torch.manual_seed(cfg.loop.seed)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        try:
            loss = "chunked-fp8" if cfg.loop.fp8_lm_head else "chunked"
            self.model = build_model(cfg.model, device=device, loss=loss)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not out_of_memory(e):
                raise
            raise OutOfMemoryError(f"the model ({self.plan.params:,} parameters: {cfg.model.describe()}) does not fit "
                                   f"in the memory of {device}: lower depth or model_dim (`python -m tinylab.calc` "
                                   f"shows the sizes)") from None
        o = cfg.optim
        self.optimizers = setup_optimizers(self.model, embedding_lr=o.embedding_lr, unembedding_lr=o.unembedding_lr,
                                           matrix_lr=o.matrix_lr, tied_lr=o.tied_lr, weight_decay=o.weight_decay)

    def restore(self) -> None:
        """Load the checkpoint being resumed into the model and optimizers (the loader has its state already)."""
        meta = checkpoint.load_checkpoint(self.s.resume_from, self.model, self.optimizers, device=self.d.device,
                                          meta=self.s.meta)  # prepare() read and checked it
        st = self.state
        st.step, st.elapsed, st.val_bpb, st.resumed_at = meta["step"], meta["elapsed"], meta.get("val_bpb"), meta["step"]
        if meta.get("num_iterations") != self.plan.num_iterations and self.d.master:
            print(f"resuming with num_iterations={self.plan.num_iterations} "
                  f"(checkpoint planned {meta.get('num_iterations')})")

    def compiles(self) -> bool:
        """Whether the forward is torch.compile'd: on CUDA unless told otherwise."""
        return self.d.device.type == "cuda" if self.cfg.loop.compile is None else self.cfg.loop.compile

    def build_forward(self) -> None:
        """What runs the training steps: DDP around the model when distributed, compiled on CUDA unless told
        otherwise. Evaluation runs the model itself, eagerly: its inference graphs were ~2.7 s of a cold compile,
        and an evaluation took as long without them (0.15 s against 0.14 s on an H100): the model's own fused
        kernels do its work either way (docs/benchmarks.md §3)."""
        device = self.d.device
        self.compiled = self.compiles()
        net = torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None) if self.d.world > 1 else self.model
        self.net = compile_model(net, self.cfg.loop.compile_regions) if self.compiled else net
        self.autocast = device_autocast(device)

    def write_run_files(self):
        """After a successful build: the tokenizer copy, metrics cut back to the checkpoint, config.json."""
        if not self.d.master:
            return None
        s, run = self.s, self.s.run
        if s.overwrite:  # the new run built: now the old one goes (its lock stays held)
            run.clear()
        if not s.meta:  # from scratch: no lines, tables or tokenizer of an earlier attempt
            run.metrics.truncate(0)
            shutil.rmtree(run.evals_dir, ignore_errors=True)
            s.tokenizer.save(run.tokenizer_dir)
        else:  # drop lines logged after the checkpoint, keep evaluations of it (tinylab.eval)
            run.metrics.truncate(s.meta["metrics_bytes"], keep_through_step=s.meta["step"])
        config = run_config(s, self.optimizers)
        run.write_config(config)
        return start_wandb(s, config) if self.cfg.loop.wandb else None

    # -- phase 4: the loop ---------------------------------------------------------------
    def loop(self) -> None:
        from tqdm.auto import tqdm

        st, n = self.state, self.plan.num_iterations
        self.bar = tqdm(total=n, initial=st.step, disable=not self.progress, desc=self.s.run.name, unit="step")
        self.meter, clock = Meter(self.plan.tokens_at(st.step)), self.clock
        t0, spent0 = time.perf_counter(), clock.spent
        try:
            while True:
                spent = clock.spent
                self.on_schedule()
                self.meter.pause(clock.spent - spent)  # throughput counts training time only
                if st.step == n:
                    break
                self.step()
        except BaseException:  # stopped or failed: the checkpoint being written still lands, and what stopped the
            failed = self.writer.wait(raise_error=False)  # loop stays the error
            if failed is not None:
                print(f"the checkpoint being written was lost too: {failed}", file=sys.stderr)
            raise
        finally:  # the steps: the loop's time less its phases (evaluations, saves, the compiling step, ...)
            clock.record("steps", time.perf_counter() - t0 - (clock.spent - spent0))
            self.bar.close()
            self.writer.release()

    def on_schedule(self) -> None:
        """Evaluate, sample, score and save at this step if the schedule says so (a resumed step already did)."""
        st, ev, last = self.state, self.cfg.eval, self.state.step == self.plan.num_iterations
        if st.step == st.resumed_at:  # its evaluations and save were done before the stop
            if last and not self.s.meta.get("finished"):  # resumed at its new last step: the run is finished now
                with self.clock.phase("save"):
                    self.save(finished=True)
            return
        if last or st.step % ev.eval_every == 0:
            with self.clock.phase("eval"):
                self.evaluate()
        if self.d.master and ev.sample_every and st.step > 0 and (last or st.step % ev.sample_every == 0):
            with self.clock.phase("sample"):
                for text in run_samples(self.model, self.s.tokenizer):
                    self.log("sample", step=st.step, text=text)
        self.score(last)  # before saving: the step's records must lie before the checkpoint's metrics offset
        every = self.plan.save_every
        if st.step > 0 and (last or (every and st.step % every == 0)):
            with self.clock.phase("save"):
                self.save(finished=last)

    def evaluate(self) -> None:
        st, tokens = self.state, self.plan.tokens_at(self.state.step)
        st.val_bpb = evaluate_bpb(self.model, self.val(), self.token_bytes, self.autocast)
        self.log("eval", step=st.step, tokens=tokens, flops=self.plan.flops_per_token * tokens, val_bpb=st.val_bpb,
                 elapsed=st.elapsed)
        if not math.isfinite(st.val_bpb):  # logged as it was, then stopped before a save: the weights diverged
            raise self.diverged("val bpb", st.val_bpb)
        self.bar.set_postfix(loss=st.loss, val_bpb=round(st.val_bpb, 4))

    def score(self, last: bool) -> None:
        """CORE and the grammar probes on rank 0 when their schedule says so (like nanochat, never at step 0:
        an untrained model scores chance); the other ranks wait at the barrier meanwhile."""
        st, ev = self.state, self.cfg.eval
        due = [kind for kind, every in (("core", ev.core_every), ("probes", ev.probes_every))
               if every and st.step > 0 and (last or st.step % every == 0)]
        for kind in due if self.d.master else ():
            with self.clock.phase("score"):
                result = measure(kind, self.model, self.s.tokenizer, device=self.d.device, bundle_dir=self.s.bundle,
                                 max_per_task=ev.core_max_per_task if kind == "core" else None, progress=False)
            self.log(**result.record(step=st.step, tokens=self.plan.tokens_at(st.step)))
            self.bar.write(cost(kind, result, st.step))
        if due:
            self.d.barrier()

    def save(self, finished: bool) -> None:
        st, run = self.state, self.s.run
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):  # never replace a good checkpoint
            raise NonFiniteLossError(f"weights are NaN/inf at step {st.step} of run {run.name!r}; not saving. "
                                     f"Last good checkpoint: {self.last_checkpoint() or 'none'}")
        if self.d.master:  # written on a thread while the next steps run; the run's last one waited for
            tok = self.s.tokenizer
            self.writer.save(run, st.step, self.model, self.optimizers, dict(
                loader=self.loader.state_dict(), num_iterations=self.plan.num_iterations, elapsed=st.elapsed,
                tokenizer=dict(name=tok.name, hash=tok.hash), metrics_bytes=run.metrics.size(),
                finished=finished, val_bpb=st.val_bpb, preset=self.cfg.name, run=run.name))
            if finished:
                self.writer.wait()
        self.d.barrier()

    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint on disk once the one being written, if any, has landed (or failed)."""
        self.writer.join()
        return self.s.run.latest_checkpoint()

    def step(self) -> None:
        """One optimizer step at the scheduled learning rate, and a log line every log_every steps."""
        st, o, n = self.state, self.cfg.optim, self.plan.num_iterations
        self.writer.poll()  # a checkpoint that failed to write stops the run now, not a save interval later
        apply_schedule(self.optimizers, lr_multiplier(st.step, n, o.warmup_ratio, o.warmdown_ratio, o.final_lr_frac),
                       muon_momentum(st.step))
        first = "compile" not in self.clock.seconds  # unless warm_up compiled it, this first step does
        with self.clock.phase("compile") if first else nullcontext(), self.memory_guard():
            loss = train_step(self.net, self.optimizers, self.loader, self.plan.batch.grad_accum,
                              autocast=self.autocast, grad_clip=o.grad_clip, model=self.model)
        if first:  # tokens/s counts the steps after it (its loss still counts in the mean)
            self.meter.exclude(self.clock.seconds["compile"], self.plan.batch.total_batch_size)
        self.meter.add(loss)
        st.step += 1
        self.bar.update(1)
        if st.step % self.cfg.loop.log_every == 0 or st.step == n:
            self.log_train()

    @contextmanager
    def memory_guard(self):
        """A CUDA out-of-memory error becomes one message: the batch that fits, the checkpoint to resume."""
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not out_of_memory(e):
                raise
            raise OutOfMemoryError(out_of_memory_message(self.cfg, self.plan, self.d.device,
                                                         self.last_checkpoint())) from None

    def diverged(self, what: str, value: float) -> NonFiniteLossError:
        st, run = self.state, self.s.run
        return NonFiniteLossError(f"{what} is {value} at step {st.step} of run {run.name!r}; training stopped. "
                                  f"Last good checkpoint: {self.last_checkpoint() or 'none'}. Lower matrix_lr/"
                                  f"{'tied_lr' if self.cfg.model.tie_embeddings else 'embedding_lr'}, set "
                                  f"grad_clip=1.0, or add warmup_ratio, then --resume or start over")

    def log_train(self) -> None:
        st, tokens = self.state, self.plan.tokens_at(self.state.step)
        st.loss, tok_s, seconds = self.meter.read(tokens, self.d.world)
        st.elapsed += seconds
        if not math.isfinite(st.loss):
            raise self.diverged("loss", st.loss)
        o, device = self.cfg.optim, self.d.device
        self.log("train", step=st.step, tokens=tokens, flops=self.plan.flops_per_token * tokens, loss=st.loss,
                 lr=lr_multiplier(st.step - 1, self.plan.num_iterations, o.warmup_ratio, o.warmdown_ratio,
                                  o.final_lr_frac),
                 tok_per_s=tok_s, mfu=self.plan.flops_per_token * tok_s / (self.peak * self.d.world) if self.peak
                 else None, mem_gb=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
                 elapsed=st.elapsed)
        self.bar.set_postfix(loss=round(st.loss, 4), val_bpb=None if st.val_bpb is None else round(st.val_bpb, 4))

    # -- phase 5: finish -----------------------------------------------------------------
    def finish(self) -> dict:
        st, bp = self.state, self.plan.batch
        summary = dict(kind="done", run=self.s.run.name, run_dir=str(self.s.run.dir), step=st.step,
                       tokens=self.plan.tokens_at(st.step), val_bpb=st.val_bpb, loss=st.loss, elapsed=st.elapsed,
                       params=self.plan.params, device=str(self.d.device), world_size=self.d.world,
                       grad_accum=bp.grad_accum, total_batch_size=bp.total_batch_size,
                       time=self.clock.breakdown())
        if self.d.master and self.log.callback is not None:
            self.log.callback(summary)
        if self.log.wandb is not None:
            self.log.wandb.finish()
        return summary


# ------------------------------------------------------------------------------- the entry points

def train(preset: TrainConfig | str, run: str, *, device=None, resume: bool = False, overwrite: bool = False,
          callback=None, progress: bool = True, **overrides) -> dict:
    """Train (or resume) run `run` of `preset` with knob overrides (see tinylab.config); return a summary.

    callback(record) is called on rank 0 with every metrics record (kind train / eval / sample / core / probes)
    and finally a {"kind": "done", ...} record. overwrite=True deletes an existing run first.
    """
    clock = Clock()
    cfg = resolve(preset, overrides)                        # phase 1
    target = Run.at(run)
    d = setup_distributed(device)
    clock.device = d.device
    try:  # the run's GPU the current device meanwhile: Triton launches its kernels there, not on their tensors' GPU
        with target.lock() if d.master else nullcontext(), current_device(d.device):
            if d.master:
                target.clean_orphans()                      # what a kill during a save left behind
            s = prepare(cfg, target, d, resume=resume, overwrite=overwrite, progress=progress)  # phase 2
            trainer = Trainer(s, clock, callback, progress)  # phase 3
            trainer.loop()                                  # phase 4
            return trainer.finish()                         # phase 5
    finally:
        if d.own_group:
            dist.destroy_process_group()


def current_device(device: torch.device):
    """The CUDA device `device` current in this thread while the block runs (one process on cuda:N), then the one
    before; a no-op for a bare "cuda" and other devices."""
    return torch.cuda.device(device) if device.type == "cuda" and device.index is not None else nullcontext()


def ensure_run(preset: TrainConfig | str, run: str, *, progress: bool = True, device=None, **overrides) -> Run:
    """The run, training (or finishing) it unless it finished as asked: the same architecture and planned steps
    (checkpoint.finished). A finished run of another architecture or more steps is refused by train's resume
    checks, with what to change; one of fewer planned steps is trained on to the new end."""
    target, cfg = Run.at(run), resolve(preset, overrides)
    ckpt = target.latest_checkpoint()
    if not checkpoint.finished(ckpt, cfg.model, RunPlan.of(cfg).num_iterations):
        train(cfg, run, resume=ckpt is not None, progress=progress, device=device)
    return target


def main(argv=None) -> int:
    a = launch.parse(sys.argv[1:] if argv is None else list(argv))
    preset, run = launch.names(a)
    try:
        summary = train(preset, run, device=a.device, resume=a.resume, overwrite=a.overwrite,
                        progress=not a.no_progress, **knob_arguments(a))
    except KeyboardInterrupt:
        print(f"\ninterrupted: {resume_advice(run)}", file=sys.stderr)
        return 130
    finally:
        stop_early()  # started for a run that failed before its data was due
    if int(os.environ.get("RANK", "0")) == 0:
        bpb = summary["val_bpb"]
        print(f"done: {summary['step']} steps, {summary['tokens']:,} tokens, val bpb "
              f"{'n/a' if bpb is None else f'{bpb:.4f}'} -> {summary['run_dir']}")
        print(f"time: {describe_time(summary['time'])}")
    return 0


def resume_advice(run: str) -> str:
    """What to do after a stop: resume from the last checkpoint, or, before the first one, start again."""
    try:
        saved = Run.at(run).latest_checkpoint() is not None
    except RunError:
        saved = False
    return (f"continue with --run {run} --resume (from its last checkpoint)" if saved
            else "no checkpoint yet: run the same command again")


def exit_now(status: int) -> None:
    """End this command's process with `status`. After a run that finished (status 0), without the interpreter's
    teardown, which took 1.3 s (freeing every module and tensor one at a time, then the CUDA context), nor the
    atexit handlers' 0.6 s (waiting for Inductor's idle compile workers, which stop by themselves once this process
    is gone): nothing is lost, since by then every file of the run is written and closed (checkpoints renamed into
    place, metrics appended line by line, wandb finished) and the data child has ended. Any other status exits
    normally, so the exit handlers still run (wandb's records how a failed or stopped run ended). A profiler or
    coverage wrapped around the command would lose its report: run train() under it instead."""
    if status != 0:
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`... | head`): what could not be written is gone anyway
        pass
    os._exit(0)


if __name__ == "__main__":
    exit_now(cli(main))
