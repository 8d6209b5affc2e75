"""Training commands as subprocesses, one per GPU: which GPUs (gpu_slots), a config as `python -m tinylab.train` flags
(train_argv), and the queue that runs them (run_queue), the next job starting on a GPU as soon as it is free.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from .config import TrainConfig, add_knob_arguments, knob_arguments
from .devices import ENV_VAR as DEVICE_VAR
from .errors import ArgumentParser
from .presets import get_preset
from .sweepspec import SweepError


@dataclass(frozen=True)
class Job:
    name: str
    argv: list
    log: Path


def run_queue(jobs: list[Job], slots: list[str]):
    """Run jobs as subprocesses, one per slot at a time (a GPU id, passed as CUDA_VISIBLE_DEVICES), in order:
    when one ends, the next starts on its slot. Yields (job, exit status, error line) as each one ends.

    Each job's stdout and stderr go to its log file; the error line is the `error: ...` line that
    tinylab's cli() prints, else the log's last line. Leaving early (an exception, Ctrl-C) stops the
    running jobs and starts no more."""
    free: Queue = Queue()
    for slot in slots:
        free.put(slot)
    running: set = set()
    lock, stop = threading.Lock(), threading.Event()

    def work(job: Job):
        slot = free.get()
        try:
            return (job, *launch(job, slot, running, lock, stop))
        finally:
            free.put(slot)

    pool = ThreadPoolExecutor(max_workers=len(slots))
    try:
        for fut in as_completed([pool.submit(work, job) for job in jobs]):
            yield fut.result()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for proc in running:
                proc.terminate()
        pool.shutdown(wait=True)


def launch(job: Job, slot: str, running: set, lock: threading.Lock, stop: threading.Event) -> tuple[int, str]:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "w") as log:
        with lock:  # never start a process once the queue is being stopped
            if stop.is_set():
                return -1, "not started: the sweep was stopped"
            proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot)))
            running.add(proc)
        code = proc.wait()
        with lock:
            running.discard(proc)
    return code, "" if code == 0 else error_line(job.log, code)


def error_line(log: Path, code: int) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else f"exit status {code}: {lines[-1] if lines else 'no output'} (log: {log})"


def knob_flags(cfg: TrainConfig) -> list[str]:
    """Flags that turn preset cfg.name into cfg on tinylab.train's command line: every architecture knob
    (the head layout knobs derive from one another, so all of them are given) and every other knob that
    differs from the preset."""
    preset, model, flags = get_preset(cfg.name).flat(), set(cfg.model.to_dict()), []
    for name, value in cfg.flat().items():
        if value is None or (name not in model and value == preset[name]):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, repr(value) if isinstance(value, float) else str(value)]
    parser = ArgumentParser(prog="tinylab.train")
    add_knob_arguments(parser)
    again = get_preset(cfg.name).override(**knob_arguments(parser.parse_args(flags)))
    if again.to_dict() != cfg.to_dict():  # a knob left unset (None) where the preset sets it cannot be a flag
        raise SweepError(f"cannot express this config as tinylab.train flags ({' '.join(flags)}); run the sweep on "
                         f"one device (--device cuda:0), which trains in-process")
    return flags


def train_argv(cfg: TrainConfig, run: str, device: str, *flags: str) -> list[str]:
    """`python -m tinylab.train` for cfg as run `run` on `device`, with extra flags (--resume, --overwrite)."""
    return [sys.executable, "-m", "tinylab.train", "--preset", cfg.name, "--run", run, *flags, "--no-progress",
            "--device", device, *knob_flags(cfg)]


def gpu_ids(text: str) -> list[str]:
    """--devices: GPU indices separated by commas (what CUDA_VISIBLE_DEVICES takes), e.g. 0,1."""
    ids = [d.strip() for d in text.split(",") if d.strip()]
    if not ids or not all(d.isdigit() for d in ids) or len(set(ids)) < len(ids):
        raise argparse.ArgumentTypeError(f"must be distinct GPU indices separated by commas, e.g. 0,1; got {text!r}")
    return ids


def subprocess_device(device=None) -> str:
    """The device a subprocess trains on: `device`, else $TINYLAB_DEVICE, else cuda (its one visible GPU)."""
    return device or os.environ.get(DEVICE_VAR) or "cuda"


def visible_gpus() -> list[str]:
    """The ids of the GPUs this process sees, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    count = torch.cuda.device_count()
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:count] if visible else [str(i) for i in range(count)]


def gpu_slots(device=None, devices=None) -> list[str]:
    """The GPUs to train on in parallel, one point each: `devices` when given, else every visible GPU when
    there are two or more and no single device was asked for; [] means in order, in this process."""
    child = subprocess_device(device)
    if devices is not None:  # on a device other than cuda, parallel processes without GPUs (a dry run)
        devices = [str(d) for d in devices]
        gpus = visible_gpus() if child.startswith("cuda") else devices
        absent = [d for d in devices if d not in gpus]
        if absent:
            raise SweepError(f"--devices names GPU(s) {', '.join(absent)}, but the GPUs visible here are "
                             f"{', '.join(gpus) or 'none'}: pass visible GPU indices")
        return devices
    gpus = visible_gpus() if child == "cuda" else []
    return gpus if len(gpus) > 1 else []
