"""Evaluate a run's checkpoint: CORE, the grammar probes or validation bits per byte, and keep the result.

    python -m tinylab.eval core --run itty-1                      # the pinned eval bundle, every example
    python -m tinylab.eval core --run itty-1 --max-per-task 500   # the subset nanochat scores while training
    python -m tinylab.eval probes --run itty-1 --step 500
    python -m tinylab.eval bpb --checkpoint $TINYLAB_HOME/runs/itty-1/checkpoints/step_001017 --device cpu

The same from a notebook: `evaluate("itty-1", "probes")` returns the result (a core.CoreResult,
probes.ProbeResult or BpbResult). Each evaluation appends one record to the run's metrics.jsonl at
the checkpoint's step (kind core, probes, or for bpb an `eval` line like training's; schema:
tinylab.run.RECORDS) and writes its table to runs/<run>/evals/<kind>-step_NNNNNN.csv, atomically.
Evaluating a step again adds a second record and replaces the table. Resuming the run later keeps
these records (tinylab.run.MetricsLog.truncate says why that is safe).

The trainer runs the same `measure` on rank 0 every core_every / probes_every steps (tinylab.train).
Devices: --device, else $TINYLAB_DEVICE, else the best there is; CUDA evaluates in bf16 autocast,
the CPU in fp32. The model is never compiled: CORE and the probes feed it batches of many shapes,
and each new shape would recompile it.
"""
from __future__ import annotations

import numbers
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import core, paths
from .checkpoint import load_model, locate, read_meta
from .config import TrainConfig
from .devices import autocast, pick_device
from .errors import ArgumentParser, TinylabError, UsageError, cli
from .run import Run

KINDS = ("core", "probes", "bpb")
DEFAULT_BATCH = {"core": 32, "probes": 256}  # candidate rows / sentences per forward; bpb: the run's device batch
NOUN = {"core": "examples", "probes": "pairs", "bpb": "tokens"}  # what examples/s counts


class EvalError(TinylabError):
    """An evaluation that cannot run as asked; the message says what to do."""


@dataclass
class BpbResult:
    """Validation bits per byte of one checkpoint on its run's own val split."""
    val_bpb: float
    n: int            # tokens scored
    seconds: float

    def to_csv(self, path) -> Path:
        return paths.atomic_write(path, f"val_bpb,tokens,seconds\n{self.val_bpb!r},{self.n},{self.seconds:.3f}\n")

    def __repr__(self):
        return f"BpbResult(val_bpb={self.val_bpb:.4f}, tokens={self.n:,}, seconds={self.seconds:.1f})"




def val_bpb(model, tokenizer, cfg: TrainConfig, *, device, batch_size: int | None = None,
            progress: bool = True) -> BpbResult:
    """Bits per byte on the first eval_tokens of cfg's val split: the pass training's evaluations make."""
    from .evaluate import evaluate_bpb
    from .loader import val_batches

    t0, scored = time.perf_counter(), []

    def counted(batches):  # the pass may hold fewer than eval_tokens when the split is small, and a last batch
        for x, y in batches:  # padded with ignored (-1) targets; counted on the device, read once at the end
            scored.append((y >= 0).sum())
            yield x, y

    batches = val_batches(cfg, tokenizer, batch_size=batch_size, device=device, progress=progress)
    token_bytes = torch.as_tensor(tokenizer.token_bytes, dtype=torch.int64, device=device)
    bpb = evaluate_bpb(model, counted(batches), token_bytes, autocast(device))
    return BpbResult(bpb, int(torch.stack(scored).sum()) if scored else 0, time.perf_counter() - t0)


def measure(kind: str, model, tokenizer, *, device, cfg: TrainConfig | None = None, batch_size: int | None = None,
            max_per_task: int | None = None, bundle_dir=None, progress: bool = True):
    """Evaluate a loaded model (plain, not compiled); bpb needs the run's config, core a bundle (None: ensure_bundle)."""
    from .probes import evaluate_probes

    device = torch.device(device)
    batch_size = batch_size or DEFAULT_BATCH.get(kind)
    if kind == "core":
        return core.evaluate_core(model, tokenizer, bundle_dir=bundle_dir, max_per_task=max_per_task,
                                  batch_size=batch_size, device=device, progress=progress)
    if kind == "probes":
        return evaluate_probes(model, tokenizer, batch_size=batch_size, device=device, progress=progress)
    return val_bpb(model, tokenizer, cfg, device=device, batch_size=batch_size, progress=progress)


def cost(kind: str, result, step: int) -> str:
    """One line: the score, and what it cost (seconds, examples/s)."""
    score = (f"CORE {result.core:.4f}" if kind == "core" else f"probes {result.accuracy:.1%}" if kind == "probes"
             else f"val bpb {result.val_bpb:.4f}")
    rate = result.n / max(result.seconds, 1e-9)
    return f"step {step}: {score} ({result.n:,} {NOUN[kind]} in {result.seconds:.1f} s, {rate:,.0f} {NOUN[kind]}/s)"


def position(config: dict, meta: dict) -> dict:
    """Where the checkpoint is in training, as an eval record says it: step, tokens, flops, elapsed."""
    derived, step = config.get("derived", {}), meta["step"]
    tokens = step * derived["total_batch_size"] if derived.get("total_batch_size") else None
    flops = derived["flops_per_token"] * tokens if tokens is not None and derived.get("flops_per_token") else None
    return dict(step=step, tokens=tokens, flops=flops, elapsed=meta.get("elapsed"))


def record(run: Run, kind: str, result, at: dict) -> None:
    """Write the result's table, then append its metrics record at the checkpoint's position (at)."""
    run.evals_dir.mkdir(parents=True, exist_ok=True)
    result.to_csv(run.eval_csv(kind, at["step"]))
    if kind == "bpb":
        run.metrics.write("eval", val_bpb=result.val_bpb, **at)
    else:
        run.metrics.write(**result.record(step=at["step"], tokens=at["tokens"]))


def check_request(kind: str, max_per_task, batch_size, step=None) -> None:
    """Refuse what cannot work before anything is loaded."""
    if kind not in KINDS:
        raise EvalError(f"unknown evaluation {kind!r}; choose one of {', '.join(KINDS)}")
    if max_per_task is not None and kind != "core":
        raise EvalError(f"max_per_task (--max-per-task) applies to core only, not to {kind}: leave it out")
    for name, value, least in (("max_per_task", max_per_task, 1), ("batch_size", batch_size, 1), ("step", step, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least):
            raise EvalError(f"{name} must be an integer of at least {least} (or None), got {value!r}")


def evaluate(run, kind: str, *, step: int | None = None, max_per_task: int | None = None,
             batch_size: int | None = None, device=None, bundle_dir=None, progress: bool = True, write: bool = True):
    """Evaluate a run's newest checkpoint (or `step`'s), record the result with the run, return it.

    run: a run name, run directory, checkpoint directory or Run. kind: core | probes | bpb.
    max_per_task: CORE only (None: every example). batch_size: candidate rows (core, default 32),
    sentences (probes, 256) or sequences (bpb, the run's device_batch_size) per forward.
    bundle_dir: CORE's eval bundle (None: the pinned one, downloaded once). write=False records nothing.
    Everything that can be refused is refused before the model is loaded or anything is written.
    """
    check_request(kind, max_per_task, batch_size, step)
    target, ckpt = locate(run, None if step is None else int(step))
    if write:  # a folder or file in the way of the record is refused now, not after the evaluation
        target.check_layout(["evals", "metrics.jsonl", ".metrics.lock"])
    config = target.read_config()
    cfg = TrainConfig.from_dict(config) if kind == "bpb" else None  # the val split and eval_tokens
    device = pick_device(device)
    if kind == "core":
        bundle_dir = core.ensure_bundle() if bundle_dir is None else bundle_dir
        core.load_tasks(bundle_dir)  # a wrong folder is refused before the model loads
    model, tokenizer, meta = load_model(ckpt, device=device)
    result = measure(kind, model, tokenizer, device=device, cfg=cfg, batch_size=batch_size,
                     max_per_task=max_per_task, bundle_dir=bundle_dir, progress=progress)
    if write:
        record(target, kind, result, position(config, meta))
    return result


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tinylab.eval", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=KINDS, help="core: DCLM's CORE, as nanochat scores it; probes: grammatical "
                                              "minimal pairs (offline); bpb: val bits per byte")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run name under $TINYLAB_HOME/runs (or a run directory)")
    src.add_argument("--checkpoint", help="a checkpoint directory (or a run directory)")
    p.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest)")
    p.add_argument("--max-per-task", type=int, help="core: score the first N shuffled examples of each task "
                                                    "(default: all; training uses 500)")
    p.add_argument("--bundle", help="core: an unpacked eval bundle (default: $TINYLAB_HOME/eval_bundle, "
                                    "downloaded once)")
    p.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: $TINYLAB_DEVICE, else the best available)")
    p.add_argument("--batch-size", type=int, help="rows per forward (core 32, probes 256, bpb the run's device batch)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.bundle is not None and a.kind != "core":
        raise UsageError(f"--bundle applies to core only, not to {a.kind}: leave it out")
    check_request(a.kind, a.max_per_task, a.batch_size)
    run, ckpt = locate(a.run or a.checkpoint, a.step)  # once: a trainer may save a newer checkpoint meanwhile
    result = evaluate(ckpt, a.kind, max_per_task=a.max_per_task, batch_size=a.batch_size, device=a.device,
                      bundle_dir=a.bundle, progress=not a.no_progress)
    if a.kind != "bpb":
        print(result.table().round(4).to_string(index=False))
    step = read_meta(ckpt)["step"]
    print(cost(a.kind, result, step))
    print(f"recorded in {run.metrics.path} and {run.eval_csv(a.kind, step)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
