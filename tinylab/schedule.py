"""The run plan: options → steps, accumulation, learning-rate schedule. Pure arithmetic, no torch.

The batch plan turns "tokens per optimizer step" into micro-batches. A total that does not
divide evenly (the seed's 48 × 2048 sequences against 524,288 tokens) is rounded to the
nearest valid total with one line of explanation instead of an assert: a user asking for
~0.5M tokens per step wants training, not a traceback.

The schedules are nanochat's: linear warmup, a constant plateau, a linear warmdown to
`final_lr_frac`, and Muon momentum ramped from 0.85 to 0.95 over the first 300 steps.

`RunPlan` is what a run will do, derived from its config before anything is built; `plan`
adds what it will cost (time and memory estimates) for the notebooks and the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import calc
from .config import ConfigError, TrainConfig
from .presets import resolve


class BatchSizeError(ConfigError):
    """A batch plan that cannot work at all (e.g. a non-positive size)."""


@dataclass(frozen=True)
class BatchPlan:
    device_batch_size: int   # sequences per forward/backward on one device
    seq_len: int
    world_size: int
    total_batch_size: int    # tokens per optimizer step actually used
    requested: int           # tokens per optimizer step asked for
    grad_accum: int          # micro-steps per optimizer step on each device

    @property
    def tokens_per_micro_step(self) -> int:
        return self.device_batch_size * self.seq_len * self.world_size

    @property
    def rounded(self) -> bool:
        return self.total_batch_size != self.requested

    def note(self) -> str:
        """One line saying what was rounded and why (empty when nothing was)."""
        if not self.rounded:
            return ""
        return (f"total_batch_size {self.requested:,} is not a multiple of device_batch_size × seq_len × "
                f"world_size = {self.device_batch_size} × {self.seq_len} × {self.world_size} = "
                f"{self.tokens_per_micro_step:,} tokens; using {self.total_batch_size:,} "
                f"({self.grad_accum} accumulation step{'s' if self.grad_accum > 1 else ''}) instead")


def plan_batch(total_batch_size: int, device_batch_size: int, seq_len: int, world_size: int = 1) -> BatchPlan:
    """Nearest total (ties round up) that is a positive multiple of one micro-step across all ranks."""
    for name, v in dict(total_batch_size=total_batch_size, device_batch_size=device_batch_size,
                        seq_len=seq_len, world_size=world_size).items():
        if not isinstance(v, int) or v < 1:
            raise BatchSizeError(f"{name} must be a positive integer, got {v!r}")
    micro = device_batch_size * seq_len * world_size
    accum = max(1, (total_batch_size + micro // 2) // micro)
    return BatchPlan(device_batch_size, seq_len, world_size, accum * micro, total_batch_size, accum)


def num_iterations_for(target_tokens: int, total_batch_size: int) -> int:
    """Optimizer steps needed to see about target_tokens (at least one)."""
    return max(1, round(target_tokens / total_batch_size))


def lr_multiplier(step: int, num_iterations: int, warmup_ratio: float = 0.0,
                  warmdown_ratio: float = 0.2, final_lr_frac: float = 0.0) -> float:
    """nanochat's trapezoid: (step+1)/warmup during warmup, 1 on the plateau, linear to final_lr_frac.

    step is clamped to [0, num_iterations]: past the end the rate stays at final_lr_frac."""
    step = min(max(step, 0), num_iterations)
    warmup = round(warmup_ratio * num_iterations)
    warmdown = round(warmdown_ratio * num_iterations)
    if step < warmup:
        return (step + 1) / warmup
    if step <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - step) / warmdown
    return progress + (1 - progress) * final_lr_frac


def muon_momentum(step: int, start: float = 0.85, end: float = 0.95, warmup_steps: int = 300) -> float:
    """Muon momentum ramps linearly from start to end over warmup_steps, then stays at end."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end


@dataclass(frozen=True)
class RunPlan:
    """The numbers a run derives from its config: batch layout, steps, checkpoint cadence, cost per token."""
    batch: BatchPlan
    num_iterations: int
    save_every: int      # 0: only the final checkpoint
    params: int
    flops_per_token: int

    @classmethod
    def of(cls, cfg: TrainConfig, world_size: int = 1) -> "RunPlan":
        bp = plan_batch(cfg.batch.total_batch_size, cfg.batch.device_batch_size, cfg.model.sequence_len, world_size)
        steps = cfg.loop.num_iterations or num_iterations_for(cfg.loop.target_tokens, bp.total_batch_size)
        save_every = cfg.eval.eval_every if cfg.loop.save_every is None else cfg.loop.save_every
        return cls(bp, steps, save_every, calc.param_counts(cfg.model)["total"], calc.flops_per_token(cfg.model))

    def tokens_at(self, step: int) -> int:
        return step * self.batch.total_batch_size


def plan(preset: TrainConfig | str, world_size: int = 1, *, gpu: str = "RTX 3090", mfu: float = 0.4,
         **overrides) -> dict:
    """What a run will do, before doing it: params, batch plan, steps, tokens, FLOPs, and the
    calculators' estimates of peak VRAM (per device) and wall time on `gpu` at model-FLOPs utilisation `mfu`."""
    cfg = resolve(preset, overrides)
    c, p = cfg.model, RunPlan.of(cfg, world_size)
    bp, tokens = p.batch, p.tokens_at(p.num_iterations)
    fp8 = cfg.loop.fp8_lm_head and calc.gpu_has_fp8(gpu)  # elsewhere the run falls back to bf16
    peak = calc.gpu_peak_flops(gpu)
    if peak is None:
        raise ConfigError(f"unknown GPU {gpu!r}; choose one of: {', '.join(calc.GPU_PEAK_FLOPS)}")
    return dict(preset=cfg.name, model=c.describe(), params=p.params, flops_per_token=p.flops_per_token,
                device_batch_size=bp.device_batch_size, seq_len=c.sequence_len, world_size=world_size,
                total_batch_size=bp.total_batch_size, grad_accum=bp.grad_accum, batch_note=bp.note(),
                num_iterations=p.num_iterations, tokens=tokens, flops=p.flops_per_token * tokens,
                vram_gib=calc.vram_estimate(c, bp.device_batch_size, fp8_lm_head=fp8)["total"] / 2 ** 30,
                gpu=gpu, mfu=mfu,
                est_hours=calc.training_time_s(c, tokens, peak * world_size, mfu) / 3600)


def describe_plan(p: dict) -> str:
    """plan() as a few aligned lines for a notebook or the CLI."""
    lines = [f"preset      {p['preset']}: {p['model']}",
             f"params      {p['params']:,}   ({p['flops_per_token'] / 1e6:.1f} MFLOPs per token)",
             f"batch       {p['device_batch_size']} × {p['seq_len']} tokens × {p['world_size']} device(s) × "
             f"{p['grad_accum']} accumulation = {p['total_batch_size']:,} tokens per step",
             f"run         {p['num_iterations']:,} steps = {p['tokens']:,} tokens = {p['flops']:.3g} FLOPs",
             f"estimate    {p['vram_gib']:.1f} GiB peak VRAM per device; {p['est_hours'] * 60:.1f} min on "
             f"{p['world_size']} × {p['gpu']} at {p['mfu']:.0%} MFU"]
    if p["batch_note"]:
        lines.append(f"note        {p['batch_note']}")
    return "\n".join(lines)
