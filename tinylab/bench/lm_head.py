"""lm_head + soft-capped cross-entropy on a CUDA GPU: bf16 (kernel="auto") against FP8 (kernel="fp8").

    python -m tinylab.bench.lm_head [--kernels auto,fp8,fp8-fast] [--reps 20] [--warmup 3] [--json PATH]

One ittybitty micro-batch by default: x 98,304 × 512 bf16 (requires grad), W 24,576 × 512 fp32
under bf16 autocast, random targets, softcap 15. Rows, one per configuration:
  step     forward + backward of tinylab.loss.linear_cross_entropy per kernel, with the errors of its
           loss (relative) and gradients (relative norm) against an fp32 chunked reference;
  quant    FP8's once-per-call quantisation of x and W (compiled, as the path runs it);
  gemm     the three GEMMs of one chunk (logits, dx = g·W, dW += gᵀ·x) in bf16 and in FP8;
  kernel   the loss kernel alone on one chunk's logits: the bf16 one, the FP8 one (row kernel, then a
           transpose) and evaluation's losses-only one, with the bandwidth each reaches (bytes read and
           written / time).
Times are medians of --reps CUDA-event timings after --warmup untimed calls (compiling happens there).
"""
from __future__ import annotations

import functools
import json
import statistics
import sys

import torch

from .. import loss as lm_loss
from ..devices import pick_device
from ..errors import ArgumentParser, appendable, DeviceError, at_least, cli, positive, some_of
from .gpu import time_steps

SOFTCAP = 15.0


def parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m tinylab.bench.lm_head", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=positive(int, "tokens"), default=98_304, help="rows of x (48 × 2048)")
    ap.add_argument("--dim", type=positive(int, "dim"), default=512)
    ap.add_argument("--vocab", type=positive(int, "vocab"), default=24_576)
    ap.add_argument("--chunk", type=positive(int, "chunk"), default=lm_loss.CHUNK_TOKENS, help="tokens per chunk")
    ap.add_argument("--kernels", default=["auto", "fp8"], type=some_of(lm_loss.KERNELS),
                    help="comma-separated linear_cross_entropy kernels: " + ", ".join(lm_loss.KERNELS))
    ap.add_argument("--reps", type=positive(int, "reps"), default=20, help="timed calls (the median is reported)")
    ap.add_argument("--warmup", type=at_least(int, "warmup calls", 0), default=3, help="untimed calls first")
    ap.add_argument("--json", default=None, type=appendable,
                    help="append one JSON line per configuration to this file")
    return ap


def time_ms(fn, warmup: int, reps: int) -> tuple[float, float]:
    """Median and spread (max - min) in ms of fn() over reps calls, each between two CUDA events."""
    times = [1e3 * t for t in time_steps(fn, warmup, reps)]
    return statistics.median(times), max(times) - min(times)


@torch.no_grad()
def reference(x, w, targets, chunk):
    """fp32 loss (mean over kept targets) and gradients, chunk by chunk, without TF32: what the errors compare to."""
    x, w = x.float(), w.float()
    gx, gw, total = torch.empty_like(x), torch.zeros_like(w), 0.0
    tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, False
    try:
        for s in range(0, x.size(0), chunk):
            loss, g = lm_loss._softcap_loss_and_grad(x[s:s + chunk] @ w.t(), targets[s:s + chunk], SOFTCAP)
            torch.mm(g, w, out=gx[s:s + chunk])
            gw.addmm_(g.t(), x[s:s + chunk])
            total += loss
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    n = (targets >= 0).sum()
    return total / n, gx / n, gw / n


def bench_steps(x, w, targets, kernels, a) -> list[dict]:
    ref_loss, ref_gx, ref_gw = reference(x, w, targets, a.chunk)
    rel = lambda got, want: ((got.float() - want).norm() / want.norm()).item()  # noqa: E731
    rows = []
    for kernel in kernels:
        out = {}

        def step():
            x.grad = w.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out["loss"] = lm_loss.linear_cross_entropy(x, w, targets, SOFTCAP, chunk=a.chunk, kernel=kernel)
            out["loss"].backward()

        ms, spread = time_ms(step, a.warmup, a.reps)
        rows.append(dict(group="step", name=f"kernel={kernel}", ms=ms, spread_ms=spread,
                         err_loss=abs((out["loss"].detach() - ref_loss) / ref_loss).item(),
                         err_dx=rel(x.grad, ref_gx), err_dw=rel(w.grad, ref_gw)))
    return rows


def bench_gemms(x, w, a) -> list[dict]:
    """The chunk's three GEMMs, bf16 (as kernel="auto") and FP8 (as kernel="fp8", operands already quantised)."""
    n = min(a.chunk, x.size(0))
    xb, wb = x[:n].detach(), w.to(torch.bfloat16)
    g = torch.randn(n, w.size(0), device="cuda").mul_(1e-3).to(torch.bfloat16)
    dw = torch.zeros_like(w)
    x8, x8t, sx = lm_loss._quantize_fp8(xb)
    w8, w8t, sw = lm_loss._quantize_fp8(w)
    g8 = (g.float() * lm_loss.FP8_GRAD_SCALE).to(torch.float8_e5m2)
    g8t, sg = g8.t().contiguous(), torch.full((), 1 / lm_loss.FP8_GRAD_SCALE, device="cuda")
    mm8 = lambda p, q, sp, sq, dt: torch._scaled_mm(p, q, scale_a=sp, scale_b=sq, out_dtype=dt)  # noqa: E731
    cases = {
        "bf16 logits = x·Wᵀ": lambda: xb @ wb.t(),
        "bf16 dx = g·W": lambda: g @ wb,
        "bf16 dW += gᵀ·x (fp32 acc)": lambda: torch.addmm(dw, g.t(), xb, out_dtype=torch.float32, out=dw),
        "fp8 logits = x·Wᵀ": lambda: mm8(x8, w8.t(), sx, sw, torch.bfloat16),
        "fp8 dx = g·W": lambda: mm8(g8, w8t.t(), sg, sw, torch.bfloat16),
        "fp8 dW += gᵀ·x": lambda: dw.add_(mm8(g8t, x8t.t(), sg, sx, torch.float32)),
    }
    flops = 2 * n * w.size(0) * w.size(1)
    rows = []
    for name, fn in cases.items():
        ms, spread = time_ms(fn, a.warmup, a.reps)
        rows.append(dict(group="gemm", name=name, ms=ms, spread_ms=spread, tflop_s=flops / ms / 1e9))
    return rows


def bench_quantize(x, w, a) -> list[dict]:
    """The FP8 path's once-per-call cost: x and W to e4m3 with their transposed copies (compiled, as it runs)."""
    quantize = lm_loss._kernel(lm_loss._quantize_fp8, x.device)
    rows = []
    for name, t in (("x", x.detach()), ("W", w.detach())):
        ms, spread = time_ms(lambda: quantize(t), a.warmup, a.reps)
        nbytes = t.numel() * (2 * t.element_size() + 2)  # read twice (amax, cast), two fp8 copies written
        rows.append(dict(group="quant", name=f"fp8 quantise {name} {tuple(t.shape)} {t.dtype}", ms=ms,
                         spread_ms=spread, tb_s=nbytes / ms / 1e9))
    return rows


def bench_kernels(targets, a) -> list[dict]:
    """The loss kernels alone on one chunk of logits, timed, with their per-row loss error against fp64 torch."""
    from .. import kernels

    n, v = min(a.chunk, targets.numel()), a.vocab
    logits = (torch.randn(n, v, device="cuda") * 3).to(torch.bfloat16)
    t = targets[:n]
    ref = lm_loss._chunk_losses(logits.double(), t, SOFTCAP)
    scratch = logits.clone()  # the bf16 kernel writes its gradient over its input: same traffic every call
    bf16 = lambda approx: lambda: kernels.softcap_cross_entropy_(scratch, t, SOFTCAP, approx)  # noqa: E731
    fp8 = functools.partial(kernels.softcap_cross_entropy_fp8, logits, t, SOFTCAP, lm_loss.FP8_GRAD_SCALE)
    evaluation = functools.partial(kernels.softcap_cross_entropy, logits, t, SOFTCAP)
    cases = {"bf16 softcap_cross_entropy_, tanh.approx": (bf16(True), 3 * 2 * n * v),  # 2 bf16 reads, 1 write
             "bf16 softcap_cross_entropy_, exact tanh": (bf16(False), 3 * 2 * n * v),
             "fp8 row kernel + transpose (default)": (fp8, 2 * 2 * n * v + 3 * n * v),  # 2 reads; g8 w, r; g8t w
             "bf16 softcap_cross_entropy (losses only)": (evaluation, 2 * n * v)}  # one read
    rows = []
    for name, (fn, nbytes) in cases.items():
        ms, spread = time_ms(fn, a.warmup, a.reps)
        scratch.copy_(logits)
        err = (fn()[0] if name.startswith("fp8") else fn()).double() - ref
        rows.append(dict(group="kernel", name=name, ms=ms, spread_ms=spread, tb_s=nbytes / ms / 1e9,
                         loss_bias=err.mean().item(), loss_max_err=err.abs().max().item()))
    return rows


def format_row(r: dict) -> str:
    if r["group"] == "step":
        extra = "rel err: " + "  ".join(f"{k} {r['err_' + k]:.1e}" for k in ("loss", "dx", "dw"))
    else:
        extra = f"{r['tflop_s']:.0f} TFLOP/s" if "tflop_s" in r else f"{r['tb_s']:.2f} TB/s"
        if "loss_bias" in r:
            extra += f"  loss − fp64: mean {r['loss_bias']:+.1e}, max |·| {r['loss_max_err']:.1e}"
    return f"{r['group']:<7}{r['name']:<52}{r['ms']:9.3f} ms (±{r['spread_ms']:.3f})  {extra}"


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    device = pick_device()
    if device.type != "cuda":
        raise DeviceError("the lm_head benchmark times CUDA kernels, and this machine has no CUDA GPU "
                          "(or $TINYLAB_DEVICE names another device)")
    if device.index is not None:
        torch.cuda.set_device(device)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; FP8 "
          f"{'yes' if lm_loss.fp8_supported('cuda') else 'no (kernel=fp8 runs as auto)'}; "
          f"x {a.tokens}×{a.dim} bf16, W {a.vocab}×{a.dim} fp32, chunk {a.chunk}")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(a.tokens, a.dim, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(a.vocab, a.dim, device="cuda", generator=g) * 0.05).requires_grad_()  # logits of std ~1.1
    targets = torch.randint(0, a.vocab, (a.tokens,), device="cuda", generator=g)
    rows = bench_steps(x, w, targets, a.kernels, a)
    if lm_loss.fp8_supported("cuda"):
        rows += bench_quantize(x, w, a) + bench_gemms(x, w.detach(), a) + bench_kernels(targets, a)
    for r in rows:
        print(format_row(r), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({**r, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "tokens": a.tokens, "dim": a.dim, "vocab": a.vocab, "chunk": a.chunk}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
