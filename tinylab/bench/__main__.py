"""`python -m tinylab.bench WHAT [options]`: every benchmark of tinylab (see tinylab.bench).

    python -m tinylab.bench matmul                       # bf16 dense matmul TFLOP/s of this card
    python -m tinylab.bench train --preset ittybitty --batch-sizes 32,48,64 [--loss chunked,plain] [--no-compile]
        [--rope-norm auto,torch] [--relu2 auto,torch]     # the fused Triton ops on and off
    python -m tinylab.bench vram --preset ittybitty,seed15m --batch-sizes 8,16,32,48,64
    python -m tinylab.bench profile --preset ittybitty --batch-sizes 48
    python -m tinylab.bench fit --preset ittybitty --batch-sizes 128,136 --gpu-mem-gb 24   # fits a 24 GiB card?
    python -m tinylab.bench check --preset ittybitty      # every loss implementation against materialised logits
    python -m tinylab.bench decode --preset ittybitty --streams 1,8 [--device cuda] [--no-cache-baseline]
    python -m tinylab.bench loader --preset ittybitty [--device cuda]
"""
from __future__ import annotations

import itertools
import json
import os
import sys

import torch

from ..devices import ENV_VAR, pick_device
from ..errors import (ArgumentParser, appendable, DeviceError, UsageError, at_least, cli, positive, positive_ints,
                      some_of)
from ..model import LOSS_IMPLS
from ..presets import get_preset

GPU = ("matmul", "check", "train", "vram", "profile", "fit")
GPU_BATCH_SIZES = [32, 48, 64]  # --batch-sizes of the GPU benchmarks when not given


def parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m tinylab.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=[*GPU, "decode", "loader"])
    ap.add_argument("--preset", default="ittybitty", help="preset name(s), comma-separated")
    ap.add_argument("--batch-sizes", type=positive_ints, default=None,
                    help="device batch sizes (GPU benchmarks, default 32,48,64; loader: one, default the preset's)")
    ap.add_argument("--steps", type=positive(int, "steps"), default=30, help="timed optimizer steps")
    ap.add_argument("--warmup", type=at_least(int, "warmup steps", 0), default=5,
                    help="untimed steps first (compile happens here)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-scope", default=["regions"], type=some_of(("regions", "model")),
                    help="train: comma-separated: regions (graphs for the stem, the head and one block for all, "
                         "as tinylab.train compiles), model (one whole-model graph)")
    ap.add_argument("--loss", default=["chunked"], type=some_of(LOSS_IMPLS),
                    help="comma-separated: " + "; ".join(f"{k} = {v}" for k, v in LOSS_IMPLS.items()))
    ap.add_argument("--gpu-mem-gb", type=positive(float, "GiB"), default=24.0,
                    help="fit: emulated card size in GiB")
    ap.add_argument("--residual", default=["bf16"], type=some_of(("bf16", "fp32")),
                    help="residual stream dtype under autocast, comma-separated: bf16, fp32")
    ap.add_argument("--rope-norm", default=["auto"], type=some_of(("auto", "torch")),
                    help="rotary + QK-norm, comma-separated: auto (fused Triton op), torch")
    ap.add_argument("--relu2", default=["auto"], type=some_of(("auto", "torch")),
                    help="the MLP's ReLU², comma-separated: auto (in Triton GEMMs), torch")
    ap.add_argument("--peak-tflops", type=positive(float, "TFLOP/s"), default=None,
                    help="MFU denominator (default: measured now)")
    ap.add_argument("--json", default=None, type=appendable,
                    help="append one JSON line per configuration to this file")
    ap.add_argument("--trace", default=None, help="profile: write a chrome trace here")
    ap.add_argument("--device", default=None, help="decode / loader: cpu or cuda (default: cuda if present)")
    ap.add_argument("--streams", type=positive_ints, default=[1, 8], help="decode: stream counts")
    ap.add_argument("--tokens", type=positive(int, "tokens"), default=64, help="decode: new tokens per stream")
    ap.add_argument("--prompt-tokens", type=positive(int, "prompt tokens"), default=128, help="decode: prompt length")
    ap.add_argument("--threads", type=positive(int, "threads"), help="decode: CPU threads for torch "
                                                                       "(default: torch's choice)")
    ap.add_argument("--no-cache-baseline", action="store_true", help="decode: also time 1 stream without the cache")
    ap.add_argument("--seconds", type=positive(float, "seconds", maximum=3600), default=3.0, help="loader: seconds to time")
    return ap


def run_decode(a) -> None:
    from .decode import bench, format_rows

    if a.threads is not None:
        torch.set_num_threads(a.threads)
    config, device = get_preset(a.preset).model, str(pick_device(a.device or "cpu"))
    rows = bench(config, a.streams, a.prompt_tokens, a.tokens, device)
    if a.no_cache_baseline:
        rows += bench(config, [1], a.prompt_tokens, a.tokens, device, use_cache=False)
    print(f"{a.preset}: {config.describe()}; device {device}, {torch.get_num_threads()} threads")
    print(format_rows(rows))


def run_loader(a) -> None:
    from .. import data
    from ..tokenizer import get_tokenizer
    from .loader import bench

    preset = get_preset(a.preset)
    if a.batch_sizes is not None and len(a.batch_sizes) > 1:
        raise UsageError(f"`loader` times one device batch size, got --batch-sizes {a.batch_sizes}: give one, or none "
                         f"for the preset's ({preset.batch.device_batch_size})")
    device = pick_device(a.device)  # default: the best there is (CUDA, else MPS, else CPU)
    if preset.data.corpus == "fineweb":
        try:
            data.list_shards("fineweb", num_shards=preset.data.num_shards)
        except data.CorpusError as e:  # not downloaded: measure on the bundled sample (with a tokenizer trained on it)
            print(f"measuring on the bundled sample instead of FineWeb-Edu ({e})")
            preset = preset.override(corpus="sample", num_shards=0)
    r = bench(preset, get_tokenizer(preset), batch_size=a.batch_sizes and a.batch_sizes[0], device=str(device),
              seconds=a.seconds)
    print(f"loader / 2.0M tok/s of ittybitty training: {r['loader_tok_per_s'] / 2e6:.0f}× (needs ≥ 3×)")


def run_gpu(a) -> None:
    from . import gpu

    device = pick_device()  # honours $TINYLAB_DEVICE, as training does
    if device.type != "cuda":
        why = (f"${ENV_VAR} is {os.environ[ENV_VAR]!r}: unset it" if os.environ.get(ENV_VAR)
               else "this machine has none")
        raise DeviceError(f"`{a.what}` times a training step on a CUDA GPU, and {why}; `decode` and `loader` run on "
                          f"a CPU")
    if device.index is not None:  # cuda:N from $TINYLAB_DEVICE; plain cuda keeps the current device
        torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    peak = a.peak_tflops or gpu.matmul_tflops()
    print(f"bf16 matmul ceiling: {peak:.0f} TFLOP/s")
    presets = a.preset.split(",")
    a.batch_sizes = a.batch_sizes or GPU_BATCH_SIZES
    if a.what == "check":
        gpu.check_loss(presets[0])
    elif a.what == "fit":
        for preset, batch in itertools.product(presets, a.batch_sizes):
            print(json.dumps(gpu.fits(preset, batch, a.gpu_mem_gb)), flush=True)
    elif a.what == "profile":
        gpu.profile_step(presets[0], a.batch_sizes[0], a.trace, a.compile_scope[0])
    elif a.what in ("train", "vram"):
        run_train(a, presets, peak)


def run_train(a, presets, peak) -> None:
    from . import gpu

    rows = []
    scopes = ["-"] if a.no_compile else a.compile_scope  # nothing compiled: one eager row, not one per scope
    for preset, batch, loss, residual, rope, relu2, scope in itertools.product(
            presets, a.batch_sizes, a.loss, a.residual, a.rope_norm, a.relu2, scopes):
        steps, warmup = (a.steps, a.warmup) if a.what == "train" else (2, 2)
        row = gpu.bench_train(preset, batch, compile=not a.no_compile, loss=loss, residual=residual,
                              warmup=warmup, steps=steps, peak_tflops=peak, rope_norm=rope, relu2=relu2, scope=scope)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    gpu.print_table(rows)


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    for name in a.preset.split(","):
        get_preset(name)  # an unknown preset fails before any work
    {"decode": run_decode, "loader": run_loader}.get(a.what, run_gpu)(a)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
