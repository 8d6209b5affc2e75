"""The run plan: options → steps, accumulation, learning-rate schedule. Pure arithmetic, no torch.

The batch plan turns "tokens per optimizer step" into micro-batches. A total that does not
divide evenly (the seed's 48 × 2048 sequences against 524,288 tokens) is rounded to the
nearest valid total with one line of explanation instead of an assert: a user asking for
~0.5M tokens per step wants training, not a traceback.

The schedules are nanochat's: linear warmup, a constant plateau, a linear warmdown to
`final_lr_frac`, and Muon momentum ramped from 0.85 to 0.95 over the first 300 steps.

`resolve` splits train()'s keyword overrides into architecture, preset and optimisation
knobs; `plan` shows what a run will do (and cost) before it starts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import calc
from .presets import Preset, get_preset

MODEL_KNOBS = ("depth", "model_dim", "n_head", "head_dim", "n_kv_head", "vocab_size", "sequence_len", "tie_embeddings")
PRESET_KNOBS = ("device_batch_size", "total_batch_size", "target_tokens", "eval_every", "eval_tokens", "sample_every")


class BatchSizeError(ValueError):
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


class TrainError(ValueError):
    """Bad training options or a run-directory conflict; the message says what to do."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation knobs that are not part of a preset (defaults: nanochat's seed run)."""
    num_iterations: int | None = None  # None: target_tokens / total_batch_size
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    matrix_lr: float = 0.02
    tied_lr: float | None = None       # None: unembedding_lr (see tinylab.optim)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.2
    final_lr_frac: float = 0.0
    grad_clip: float = 0.0             # 0: off
    seed: int = 42
    log_every: int = 10                # steps between loss read-backs / train metrics lines
    save_every: int | None = None      # None: eval_every; 0: only the final checkpoint
    compile: bool | None = None        # None: on CUDA only
    wandb: bool = False


def resolve(preset: Preset | str, overrides: dict) -> tuple[Preset, TrainSettings]:
    """Split keyword overrides into architecture, preset and optimisation knobs (None = unchanged)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "seq_len" in overrides:
        overrides["sequence_len"] = overrides.pop("seq_len")
    settings_keys = {f.name for f in fields(TrainSettings)}
    unknown = set(overrides) - set(MODEL_KNOBS) - set(PRESET_KNOBS) - settings_keys
    if unknown:
        raise TrainError(f"unknown training option(s) {sorted(unknown)}; valid: "
                         f"{sorted(set(MODEL_KNOBS) | set(PRESET_KNOBS) | settings_keys | {'seq_len'})}")
    preset = preset.with_model(**{k: overrides[k] for k in MODEL_KNOBS if k in overrides})
    preset = replace(preset, **{k: overrides[k] for k in PRESET_KNOBS if k in overrides})
    return preset, TrainSettings(**{k: overrides[k] for k in settings_keys if k in overrides})


def plan(preset: Preset | str, world_size: int = 1, *, gpu: str = "RTX 3090", mfu: float = 0.4, **overrides) -> dict:
    """What a run will do, before doing it: params, batch plan, steps, tokens, FLOPs, and the
    calculators' estimates of peak VRAM (per device) and wall time on `gpu` at model-FLOPs utilisation `mfu`."""
    preset, s = resolve(preset, overrides)
    c = preset.model
    bp = plan_batch(preset.total_batch_size, preset.device_batch_size, c.sequence_len, world_size)
    steps = s.num_iterations or num_iterations_for(preset.target_tokens, bp.total_batch_size)
    fpt = calc.flops_per_token(c)
    peak = calc.gpu_peak_flops(gpu)
    if peak is None:
        raise TrainError(f"unknown GPU {gpu!r}; choose one of: {', '.join(calc.GPU_PEAK_FLOPS)}")
    return dict(preset=preset.name, model=c.describe(), params=calc.param_counts(c)["total"],
                flops_per_token=fpt, device_batch_size=bp.device_batch_size, seq_len=c.sequence_len,
                world_size=world_size, total_batch_size=bp.total_batch_size, grad_accum=bp.grad_accum,
                batch_note=bp.note(), num_iterations=steps, tokens=steps * bp.total_batch_size,
                flops=fpt * steps * bp.total_batch_size,
                vram_gib=calc.vram_estimate(c, bp.device_batch_size)["total"] / 2 ** 30, gpu=gpu, mfu=mfu,
                est_hours=calc.training_time_s(c, steps * bp.total_batch_size, peak * world_size,
                                               mfu) / 3600)


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
