"""Which device a computation runs on: the caller's choice, else $TINYLAB_DEVICE, else the best there is.

TINYLAB_DEVICE exists for the tests: the root conftest sets it to `cpu`, so every value the
suite checks exactly (notebook outputs, resume curves, greedy completions) is computed in
fp32 on the CPU whether or not the machine has a GPU. A user who sets nothing gets CUDA, then
Apple's MPS, then the CPU. A device that is not there is one clear DeviceError, never a
traceback from deep inside torch.
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from .errors import DeviceError

ENV_VAR = "TINYLAB_DEVICE"


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def best_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_device(device=None) -> torch.device:
    """`device` (str or torch.device), else $TINYLAB_DEVICE, else best_device(); checked to exist."""
    device = device if device is not None else os.environ.get(ENV_VAR) or None
    if device is None:
        return best_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):  # torch's message lists a dozen backends tinylab does not run on
        raise DeviceError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} asked for, but this machine has no usable CUDA GPU "
                              f"(torch {torch.__version__}): use --device cpu, or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                              f"GPU(s) are visible: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not mps_available():
        raise DeviceError(f"device {str(device)!r} asked for, but MPS is not available here: use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {str(device)!r} is not supported: use cpu, cuda, cuda:N or mps")
    return torch.device(dev.type) if dev.type != "cuda" else dev  # cpu:0 is the cpu (safetensors refuses "cpu:0")


def memory_bytes(device: torch.device) -> int | None:
    """How much memory `device` has in all: the GPU's, or the machine's RAM for the CPU (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return None


def autocast(device: torch.device):
    """The precision tinylab computes in on `device`: bf16 autocast on CUDA, plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of t computes in here: autocast's where it is on for t's device, else t's own."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def triton_interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1; tests/test_kernels.py). Read
    here, not in tinylab.kernels, so that code which must import without Triton can ask too."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def nvidia_capability(device: torch.device) -> tuple[int, int] | None:
    """The compute capability of `device` where kernels compile for it as an NVIDIA GPU, else None (a CPU tensor,
    Triton's interpreter, ROCm): what PTX inline assembly (7.5+), TMA and quack's GEMMs (9.0) are decided on."""
    if device.type != "cuda" or triton_interpreting() or torch.version.hip is not None:
        return None
    return torch.cuda.get_device_capability(device)
