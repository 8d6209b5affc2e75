"""Pretraining loop: one library function for notebooks, the same function behind the CLI.

    python -m tinylab.train --preset ittybitty --run my-run [--depth 6 --matrix-lr 0.03 ...]
    torchrun --standalone --nproc_per_node=2 -m tinylab.train -- --preset ittybitty --run my-run   # DDP
    python -m tinylab.train --preset ittybitty --run my-run --resume               # after a crash

Design: DistributedDataParallel with no_sync() on accumulation micro-steps; every rank runs
the full (replicated) optimizer step on the all-reduced gradients. bf16 autocast and
torch.compile on CUDA, fp32 elsewhere. The loss is read back to the host only every
`log_every` steps so the GPU never waits on Python. A run lives in $TINYLAB_HOME/runs/<run>/
(config.json, metrics.jsonl, checkpoints/, tokenizer/); see tinylab.checkpoint for the format.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from . import calc, checkpoint, paths, presets
from .evaluate import evaluate_bpb
from .model import build_model
from .optim import apply_schedule, setup_optimizers
from .presets import Preset
from .runs import FORMAT as RUN_FORMAT
from .schedule import (TrainError, TrainSettings, lr_multiplier, muon_momentum, num_iterations_for, plan,  # noqa: F401
                       plan_batch, resolve)

SAMPLE_PROMPTS = ("The capital of France is", "Once upon a time,", "The meaning of life is")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept and named in the message."""


def pick_device(device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_distributed(device) -> tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, we_initialised) from torchrun's environment; (0, 1, ...) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, pick_device(device), False
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev, ours


def make_loaders(preset, tokenizer, batch_size, rank, world, device, state=None, progress=True):
    """(train loader, val factory): tinylab.loader over the pre-tokenized corpus, tokenized by rank 0 first.

    The val loader is built once; each call of the factory rewinds it for one identical eval pass."""
    from .loader import token_batches, val_pass

    def get(split, **kw):
        return token_batches(preset, tokenizer, split, batch_size=batch_size, device=device, rank=rank,
                             world_size=world, progress=progress and rank == 0, **kw)

    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 pretokenizes first
    train_loader, val_loader = get("train", state=state), get("val")
    if world > 1 and rank == 0:
        dist.barrier()

    def val():
        return val_pass(val_loader, preset.eval_tokens)
    return train_loader, val


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    return calc.gpu_peak_flops(torch.cuda.get_device_name(device))  # datasheet dense bf16, as nanochat


def run_samples(model, tokenizer, max_tokens=32) -> list[str]:
    from .engine import complete

    return [p + complete(model, tokenizer, p, temperature=0.8, top_k=50, max_tokens=max_tokens, seed=42 + i).text
            for i, p in enumerate(SAMPLE_PROMPTS)]


def train_step(net, optimizers, batches, grad_accum: int, *, autocast, grad_clip: float, model) -> torch.Tensor:
    """One optimizer step: grad_accum micro-steps of next(batches), then clip, step, zero the grads.

    net is what runs forward (model, DDP or their torch.compile); model owns the parameters.
    Under DDP all micro-steps but the last run in no_sync(), so gradients are all-reduced once.
    The caller sets the lr / momentum first (optim.apply_schedule). Returns the step's mean
    micro-batch loss as a detached device tensor (no host sync), e.g. for tinylab.bench.
    """
    no_sync = getattr(net, "no_sync", None)  # DDP (also through torch.compile's wrapper)
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


def out_of_memory_message(c, bp, device, last_checkpoint) -> str:
    """What to do after a CUDA out-of-memory error: the batch that fits by tinylab.vram, and where to resume."""
    est = calc.vram_estimate(c, bp.device_batch_size)["total"] / 2 ** 30
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        fit = calc.max_device_batch(c, total)
        have = f"this GPU has {total / 2 ** 30:.1f} GiB; the estimator's largest batch for it is {fit}"
    else:
        have = "see `python -m tinylab.calc --gpu-mem-gb N` for what fits"
    return (f"out of memory at device batch {bp.device_batch_size} × {c.sequence_len} (estimated {est:.1f} GiB; "
            f"{have}). Lower --device-batch-size: gradient accumulation keeps the total batch of "
            f"{bp.total_batch_size:,} tokens. Last good checkpoint: {last_checkpoint or 'none'}"
            f"{' (--resume continues from it)' if last_checkpoint else ''}")


class MetricsLog:
    """metrics.jsonl appender (rank 0 only) that also feeds the callback, wandb and nothing else."""

    def __init__(self, path: Path, active: bool, callback=None, wandb_run=None):
        self.path, self.active, self.callback, self.wandb = path, active, callback, wandb_run

    def __call__(self, **rec):
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.callback is not None:
            self.callback(rec)
        if self.wandb is not None and rec["kind"] in ("train", "eval"):
            self.wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=rec["step"])

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def train(preset: Preset | str, run: str, *, device=None, resume: bool = False, overwrite: bool = False,
          callback=None, progress: bool = True, **overrides) -> dict:
    """Train (or resume) run `run` of `preset` with keyword overrides; return a summary dict.

    callback(record) is called on rank 0 with every metrics record (kind train / eval / sample)
    and finally a {"kind": "done", ...} record. overwrite=True deletes an existing run first.
    """
    from tqdm.auto import tqdm

    from .tokenizer import get_tokenizer

    preset, s = resolve(preset, overrides)
    rank, world, device, own_pg = setup_distributed(device)
    master = rank == 0
    run_dir = paths.runs_dir() / run
    if master and overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if overwrite and world > 1:
        dist.barrier()  # no rank looks for checkpoints before rank 0 has deleted them
    ckpt = checkpoint.latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise TrainError(f"run {run!r} already has a checkpoint ({ckpt.name}) in {run_dir}: pass resume=True "
                         f"(--resume) to continue it, overwrite=True (--overwrite) to start over, or pick a new run name")
    if resume and ckpt is None and master:
        print(f"no checkpoint for run {run!r} yet: starting it from scratch")

    # tokenizer first on rank 0 (it may be trained), then everyone loads it
    tokenizer = get_tokenizer(preset, progress=progress) if master else None
    if world > 1:
        dist.barrier()
        tokenizer = tokenizer or get_tokenizer(preset, progress=False)
    if tokenizer.vocab_size != preset.model.vocab_size:
        raise TrainError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} tokens but the model's vocab_size "
                         f"is {preset.model.vocab_size}: they must match")
    c = preset.model
    bp = plan_batch(preset.total_batch_size, preset.device_batch_size, c.sequence_len, world)
    if master and bp.rounded:
        print(bp.note())
    num_iterations = s.num_iterations or num_iterations_for(preset.target_tokens, bp.total_batch_size)
    save_every = preset.eval_every if s.save_every is None else s.save_every

    torch.manual_seed(s.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(c, device=device)
    optimizers = setup_optimizers(model, embedding_lr=s.embedding_lr, unembedding_lr=s.unembedding_lr,
                                  matrix_lr=s.matrix_lr, tied_lr=s.tied_lr, weight_decay=s.weight_decay)
    step, loader_state, elapsed, meta = 0, None, 0.0, {}
    if resume and ckpt is not None:
        meta = checkpoint.load_checkpoint(ckpt, model, optimizers, device=device)
        step, loader_state, elapsed = meta["step"], meta["loader"], meta["elapsed"]
        if num_iterations < step:
            raise TrainError(f"run {run!r} is already at step {step}; pass --num-iterations > {step} "
                             f"or start a new run")
        if meta.get("num_iterations") != num_iterations and master:
            print(f"resuming with num_iterations={num_iterations} (checkpoint planned {meta.get('num_iterations')})")

    fpt, params = calc.flops_per_token(c), calc.param_counts(c)["total"]
    metrics_path = run_dir / "metrics.jsonl"
    wandb_run = None
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None or not (run_dir / "tokenizer").is_dir():  # from scratch: no stale copy of an old run
            tokenizer.save(run_dir / "tokenizer")
        if ckpt is None:  # from scratch (e.g. a crash before the first save): no lines of an old attempt
            metrics_path.unlink(missing_ok=True)
        if resume and ckpt is not None and metrics_path.exists():  # drop lines logged after the checkpoint
            with open(metrics_path, "r+") as f:
                f.truncate(meta["metrics_bytes"])
        train_cfg = dict(device_batch_size=bp.device_batch_size, total_batch_size=bp.total_batch_size,
                         requested_total_batch_size=bp.requested, grad_accum=bp.grad_accum,
                         num_iterations=num_iterations, target_tokens=preset.target_tokens,
                         eval_every=preset.eval_every, eval_tokens=preset.eval_tokens,
                         sample_every=preset.sample_every,
                         lrs={g["name"]: g["initial_lr"] for opt in optimizers for g in opt.param_groups},
                         **{k: v for k, v in asdict(s).items() if k != "num_iterations"})
        config = dict(run=run, preset=preset.name, model=c.to_dict(), train=train_cfg, params=params,
                      flops_per_token=fpt, tokenizer=dict(name=tokenizer.name, hash=tokenizer.hash),
                      corpus=preset.corpus, device=str(device), world_size=world,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"), format=RUN_FORMAT)
        checkpoint.write_json(run_dir / "config.json", config)
        if s.wandb:
            try:
                import wandb
            except ImportError:
                raise TrainError("--wandb needs the wandb package: pip install wandb") from None
            wandb_run = wandb.init(project="tinylab", name=run, config=config, resume="allow")
    log = MetricsLog(metrics_path, master, callback, wandb_run)

    use_compile = device.type == "cuda" if s.compile is None else s.compile
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None) if world > 1 else None
    net = ddp or model
    eval_model = torch.compile(model) if use_compile else model
    if use_compile:
        net = torch.compile(net) if ddp else eval_model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    token_bytes = torch.as_tensor(tokenizer.token_bytes, dtype=torch.int64, device=device)
    loader, val_loader = make_loaders(preset, tokenizer, bp.device_batch_size, rank, world, device, loader_state,
                                      progress)
    peak = peak_flops(device)

    def tokens_at(n):
        return n * bp.total_batch_size

    def save(at_step, finished):
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # never replace a good checkpoint
            raise NonFiniteLossError(f"weights are NaN/inf at step {at_step} of run {run!r}; not saving. Last good "
                                     f"checkpoint: {checkpoint.latest_checkpoint(run_dir) or 'none'}")
        if master:
            checkpoint.save_checkpoint(run_dir, at_step, model, optimizers, dict(
                loader=loader.state_dict(), num_iterations=num_iterations, elapsed=elapsed,
                tokenizer=dict(name=tokenizer.name, hash=tokenizer.hash), metrics_bytes=log.size(),
                finished=finished, val_bpb=val_bpb, preset=preset.name, run=run))
        if world > 1:
            dist.barrier()

    bar = tqdm(total=num_iterations, initial=step, disable=not (progress and master), desc=run, unit="step")
    start_step, val_bpb, loss_acc, steps_acc = step, meta.get("val_bpb"), None, 0
    t_log, tok_log, last_loss = time.perf_counter(), tokens_at(step), None
    while True:
        last = step == num_iterations
        t_pause = time.perf_counter()
        fresh = step != start_step or not resume or ckpt is None  # a resumed step was evaluated before saving
        if fresh and (last or step % preset.eval_every == 0):
            val_bpb = evaluate_bpb(eval_model, val_loader(), token_bytes, autocast)
            log(kind="eval", step=step, tokens=tokens_at(step), flops=fpt * tokens_at(step), val_bpb=val_bpb,
                elapsed=elapsed)
            bar.set_postfix(loss=last_loss, val_bpb=round(val_bpb, 4))
        if fresh and master and preset.sample_every and step > 0 and (last or step % preset.sample_every == 0):
            for text in run_samples(model, tokenizer):
                log(kind="sample", step=step, text=text)
        if fresh and step > start_step and (last or (save_every and step % save_every == 0)):
            save(step, finished=last)
        t_log += time.perf_counter() - t_pause  # throughput counts training time only
        if last:
            break

        apply_schedule(optimizers, lr_multiplier(step, num_iterations, s.warmup_ratio, s.warmdown_ratio,
                                                 s.final_lr_frac), muon_momentum(step))
        try:
            loss = train_step(net, optimizers, loader, bp.grad_accum, autocast=autocast, grad_clip=s.grad_clip,
                              model=model)
        except torch.OutOfMemoryError:
            bar.close()
            raise TrainError(out_of_memory_message(c, bp, device, checkpoint.latest_checkpoint(run_dir))) from None
        loss_acc = loss if loss_acc is None else loss_acc + loss
        step, steps_acc = step + 1, steps_acc + 1
        bar.update(1)
        if step % s.log_every == 0 or step == num_iterations:
            mean = loss_acc / steps_acc  # mean loss since the last log line
            if world > 1:
                dist.all_reduce(mean, op=dist.ReduceOp.AVG)
            last_loss, loss_acc, steps_acc = mean.item(), None, 0
            now = time.perf_counter()
            tok_s = (tokens_at(step) - tok_log) / max(now - t_log, 1e-9)
            elapsed += now - t_log
            t_log, tok_log = now, tokens_at(step)
            if not math.isfinite(last_loss):
                bar.close()
                good = checkpoint.latest_checkpoint(run_dir)
                raise NonFiniteLossError(f"loss is {last_loss} at step {step} of run {run!r}; training stopped. "
                                         f"Last good checkpoint: {good or 'none'}. Lower matrix_lr/embedding_lr, "
                                         f"set grad_clip=1.0, or add warmup_ratio, then --resume or start over")
            mfu = fpt * tok_s / (peak * world) if peak else None
            mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
            lrm = lr_multiplier(step - 1, num_iterations, s.warmup_ratio, s.warmdown_ratio, s.final_lr_frac)
            log(kind="train", step=step, tokens=tokens_at(step), flops=fpt * tokens_at(step), loss=last_loss,
                lr=lrm, tok_per_s=tok_s, mfu=mfu, mem_gb=mem, elapsed=elapsed)
            bar.set_postfix(loss=round(last_loss, 4), val_bpb=None if val_bpb is None else round(val_bpb, 4))
    bar.close()
    summary = dict(kind="done", run=run, run_dir=str(run_dir), step=step, tokens=tokens_at(step),
                   val_bpb=val_bpb, loss=last_loss, elapsed=elapsed, params=params, device=str(device),
                   world_size=world, grad_accum=bp.grad_accum, total_batch_size=bp.total_batch_size)
    if master and callback is not None:
        callback(summary)
    if wandb_run is not None:
        wandb_run.finish()
    if own_pg:
        dist.destroy_process_group()
    return summary


def ensure_run(preset: Preset | str, run: str, *, progress: bool = True, **overrides) -> Path:
    """The run directory, training (or finishing) the run only if it has no finished checkpoint."""
    run_dir = paths.runs_dir() / run
    ckpt = checkpoint.latest_checkpoint(run_dir)
    if ckpt is None or not checkpoint.read_meta(ckpt).get("finished"):
        train(preset, run, resume=ckpt is not None, progress=progress, **overrides)
    return run_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinylab.train", description="Pretrain a tinylab GPT.")
    p.add_argument("--preset", help=f"{', '.join(presets.PRESETS)} (default: $TINYLAB_PRESET, else "
                                    f"{presets.DEFAULT})")
    p.add_argument("--run", help="run name (default: the preset name); artifacts in $TINYLAB_HOME/runs/<run>/")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run of that name first")
    p.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the best available)")
    p.add_argument("--no-progress", action="store_true")
    ints = ("depth", "model_dim", "n_head", "head_dim", "n_kv_head", "vocab_size", "seq_len", "device_batch_size",
            "total_batch_size", "num_iterations", "target_tokens", "eval_every", "eval_tokens", "sample_every",
            "seed", "log_every", "save_every")
    floats = ("embedding_lr", "unembedding_lr", "matrix_lr", "tied_lr", "weight_decay", "warmup_ratio",
              "warmdown_ratio", "final_lr_frac", "grad_clip")
    for name in ints:
        p.add_argument("--" + name.replace("_", "-"), type=int)
    for name in floats:
        p.add_argument("--" + name.replace("_", "-"), type=float)
    p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on CUDA only)")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs `pip install wandb`)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # torchrun ... -m tinylab.train -- --run X: the `--` keeps torchrun off our flags
        argv = argv[1:]
    a = p.parse_args(argv)
    overrides = {k: getattr(a, k) for k in (*ints, *floats, "tie_embeddings", "compile")}
    try:
        a.preset = a.preset or presets.preset_from_env().name
        summary = train(a.preset, a.run or a.preset, device=a.device, resume=a.resume, overwrite=a.overwrite,
                        progress=not a.no_progress, wandb=a.wandb or None, **overrides)
    except (TrainError, NonFiniteLossError, checkpoint.CheckpointError, presets.UnknownPresetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with --run {a.run or a.preset} --resume (from its last checkpoint)",
              file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        bpb = summary["val_bpb"]
        print(f"done: {summary['step']} steps, {summary['tokens']:,} tokens, val bpb "
              f"{'n/a' if bpb is None else f'{bpb:.4f}'} -> {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
