"""GPU benchmarks of a training step: matmul ceiling, throughput / MFU, peak memory, a profile.

A training step here is tinylab.train's own train_step: grad_accum micro-batches of
forward + backward under bf16 autocast (compiled), then AdamW + Muon.
Tokens are random ids already on the GPU, so the numbers measure the model and optimizer,
not the loader (the loader has its own benchmark). Timings are medians of CUDA-event-timed
steps after warm-up; MFU divides achieved FLOP/s (calc.flops_per_token × tokens/s) by the
bf16 matmul rate measured in the same process. Results print as a table and, with --json,
append one JSON line per configuration.
"""
from __future__ import annotations

import statistics
import time

import torch

from .. import calc
from ..model import LOSS_IMPLS, build_model, compile_model
from ..optim import apply_schedule, setup_optimizers
from ..presets import get_preset
from ..schedule import muon_momentum, plan_batch
from ..train import train_step

MiB = 2 ** 20


def matmul_tflops(n: int = 8192, reps: int = 20) -> float:
    """Median bf16 n×n×n matmul rate on random data (zeros run faster and would flatter MFU)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def cuda_context_bytes() -> int:
    """Device memory in use that the caching allocator does not account for (CUDA context, cuBLAS workspaces)."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


class TrainStep:
    """One optimizer step of tinylab.train (its train_step) on synthetic tokens, for timing and memory.

    loss and residual pick the implementation under test (tinylab.model.LOSS_IMPLS, bf16 or fp32
    residual stream); they are options of this model instance, nothing global changes. scope is what is compiled
    (bench's --compile-scope): "regions" as tinylab.train does, "model" as one whole graph.
    """

    def __init__(self, preset_name: str, device_batch_size: int, compile: bool = True, loss: str = "chunked",
                 residual: str = "bf16", rope_norm: str = "auto", relu2: str = "auto", device: str = "cuda",
                 scope: str = "regions"):
        preset = get_preset(preset_name)
        self.config = preset.model
        self.plan = plan_batch(preset.batch.total_batch_size, device_batch_size, self.config.sequence_len)
        self.model = build_model(self.config, device, loss=loss, lowp_residual=residual == "bf16",
                                 rope_norm=rope_norm, relu2=relu2)
        self.optimizers = setup_optimizers(self.model)
        self.forward = compile_model(self.model, regions=scope == "regions") if compile else self.model
        gen = torch.Generator(device=device).manual_seed(0)
        shape = (self.plan.grad_accum, device_batch_size, self.config.sequence_len + 1)
        self.tokens = torch.randint(0, self.config.vocab_size, shape, device=device, generator=gen)
        self.autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda"))
        self.step_idx = 0

    def __call__(self) -> torch.Tensor:
        apply_schedule(self.optimizers, 1.0, muon_momentum(self.step_idx))
        batches = ((micro[:, :-1], micro[:, 1:]) for micro in self.tokens)
        loss = train_step(self.forward, self.optimizers, batches, self.plan.grad_accum,
                          autocast=self.autocast, grad_clip=0.0, model=self.model)
        self.step_idx += 1
        return loss


def time_steps(step, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of step() (a TrainStep or any callable), between two CUDA events, after
    `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def bench_train(preset: str, batch: int, *, compile: bool, loss: str, residual: str, warmup: int, steps: int,
                peak_tflops: float, rope_norm: str = "auto", relu2: str = "auto", scope: str = "regions") -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step = TrainStep(preset, batch, compile=compile, loss=loss, residual=residual, rope_norm=rope_norm, relu2=relu2,
                     scope=scope)
    try:
        times = time_steps(step, warmup, steps)
    except torch.OutOfMemoryError:
        del step
        torch.cuda.empty_cache()
        return dict(preset=preset, batch=batch, compile=compile, scope=scope, loss=loss, residual=residual,
                    rope_norm=rope_norm, relu2=relu2, oom=True)
    med = statistics.median(times)
    tokens = step.plan.total_batch_size
    fpt = calc.flops_per_token(step.config)
    row = dict(preset=preset, batch=batch, compile=compile, scope=scope, loss=loss, residual=residual,
               rope_norm=rope_norm, relu2=relu2, grad_accum=step.plan.grad_accum,
               tokens_per_step=tokens, step_ms=med * 1e3, step_ms_spread=(max(times) - min(times)) * 1e3,
               tok_per_s=tokens / med, mfu=tokens / med * fpt / (peak_tflops * 1e12),
               peak_allocated_mib=torch.cuda.max_memory_allocated() / MiB,
               peak_reserved_mib=torch.cuda.max_memory_reserved() / MiB,
               context_mib=cuda_context_bytes() / MiB, warmup_s=time.perf_counter() - t0 - sum(times),
               final_loss=step().item())
    del step
    torch._dynamo.reset()  # compiled graphs hold the model; drop them before the next configuration
    torch.cuda.empty_cache()
    return row


def profile_step(preset: str, batch: int, out: str | None, scope: str = "regions") -> None:
    """Where one optimizer step's GPU time goes, by kernel and by category."""
    from torch.profiler import ProfilerActivity, profile

    step = TrainStep(preset, batch, scope=scope)
    time_steps(step, warmup=3, steps=1)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events)
    cats: dict[str, float] = {}
    for e in events:
        cats[kernel_category(e.key)] = cats.get(kernel_category(e.key), 0.0) + e.self_device_time_total
    print(f"\nGPU time of one optimizer step ({total / 1e3:.1f} ms of kernels):")
    for cat, t in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"  {cat:28s} {t / 1e3:8.1f} ms  {100 * t / total:5.1f}%")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90))
    if out:
        prof.export_chrome_trace(out)


def kernel_category(name: str) -> str:
    n = name.lower()
    if "softcap_ce" in n:
        return "lm_head cross-entropy (triton)"
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa", "efficient_attention")):
        return "attention (SDPA)"
    if any(k in n for k in ("gemm", "cutlass", "nvjet", "sm90", "matmul", "cublas", "xmma")):
        return "matmul"
    if "triton" in n and any(k in n for k in ("red", "per_fused", "logsumexp", "exp")):
        return "fused reductions (triton)"
    if "triton" in n:
        return "fused elementwise (triton)"
    if any(k in n for k in ("adam", "foreach", "multi_tensor")):
        return "optimizer elementwise"
    if any(k in n for k in ("copy", "memcpy", "memset", "fill", "cat")):
        return "copies / fills"
    return "other elementwise"


def fits(preset: str, batch: int, gpu_mem_gib: float) -> dict:
    """Does a device batch train on a card of gpu_mem_gib? Emulated by capping PyTorch's allocator
    at that size minus this process's CUDA context, then running two optimizer steps."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((gpu_mem_gib * 2 ** 30 - cuda_context_bytes()) / total)
    torch.cuda.reset_peak_memory_stats()
    try:
        step = TrainStep(preset, batch)
        time_steps(step, warmup=2, steps=1)
        ok = True
        del step
    except torch.OutOfMemoryError:
        ok = False
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1.0)
    return dict(preset=preset, batch=batch, gpu_mem_gib=gpu_mem_gib, fits=ok,
                peak_reserved_mib=torch.cuda.max_memory_reserved() / MiB)


def check_loss(preset: str, batch: int = 4) -> None:
    """Every loss implementation against materialised logits on this device, bf16 autocast: relative differences."""
    c = get_preset(preset).model
    torch.manual_seed(0)
    idx = torch.randint(0, c.vocab_size, (batch, c.sequence_len + 1), device="cuda")
    results = {}
    for name in LOSS_IMPLS:
        torch.manual_seed(0)  # the same initial weights for every implementation
        model = build_model(c, "cuda", loss=name)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        results[name] = (loss.item(), [p.grad.float().clone() for p in model.parameters()])
    l0, g0 = results["plain"]
    for name, (l1, g1) in results.items():
        rel = max(((a - b).norm() / a.norm().clamp(min=1e-12)).item() for a, b in zip(g0, g1))
        print(f"loss {name:6s} {l1:.6f} (plain {l0:.6f}); max relative grad difference vs plain {rel:.2e}")


def print_table(rows: list[dict]) -> None:
    print(f"\n{'preset':10s} {'batch':>5s} {'compile':>7s} {'scope':>7s} {'loss':>13s} {'resid':>5s} {'rope':>5s} "
          f"{'relu2':>5s} {'accum':>5s} "
          f"{'step ms':>8s} {'tok/s':>11s} {'MFU':>6s} {'peak alloc MiB':>14s} {'peak resv MiB':>13s} {'ctx MiB':>7s}")
    for r in rows:
        if r.get("oom"):
            print(f"{r['preset']:10s} {r['batch']:5d}   out of memory")
            continue
        print(f"{r['preset']:10s} {r['batch']:5d} {str(r['compile']):>7s} {r.get('scope', 'model'):>7s} "
              f"{r['loss']:>13s} {r['residual']:>5s} {r['rope_norm']:>5s} {r.get('relu2', 'auto'):>5s} "
              f"{r['grad_accum']:5d} {r['step_ms']:8.1f} {r['tok_per_s']:11,.0f} {100 * r['mfu']:5.1f}% "
              f"{r['peak_allocated_mib']:14,.0f} {r['peak_reserved_mib']:13,.0f} {r['context_mib']:7,.0f}")
