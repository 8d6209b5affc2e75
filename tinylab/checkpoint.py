"""Checkpoints that can be resumed exactly and loaded without unpickling anything.

This module owns what is inside a checkpoint directory; where checkpoints live and which
are complete is tinylab.run's business. Layout of one checkpoint, runs/<run>/checkpoints/step_NNNNNN/:

    model.safetensors   weights (safetensors.torch.save_model: a tied wte/lm_head is stored once)
    optim.safetensors   optimizer state tensors, keyed "<optimizer>.<param index>.<name>"
    checkpoint.json     step, model config, optimizer hyperparameters and scalar state,
                        loader state, RNG states (base64), tokenizer name + hash,
                        metrics.jsonl byte offset, finished flag, and the sha256 of each
                        .safetensors file ("sha256": {"model.safetensors": "<64 hex>", ...})

The sha256 is taken of the bytes as written and checked before a load trusts a file: safetensors
notices a truncated file, not one garbled in place (same length), which would otherwise resume
from garbage. Checkpoints written before the field existed load unchecked.

A checkpoint is written into a hidden temp directory and renamed into place in one
os.rename, so a crash leaves either the complete new checkpoint or none; older ones are
pruned only afterwards. Re-saving a step renames its old directory aside (.old-*), renames the
new one in, and only then deletes the old. The newest complete step directory is loaded.
"""
from __future__ import annotations

import base64
import hashlib
import json
import mmap
import os
import random
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model as st_load_model, save_file, save_model

from . import paths
from .config import GPTConfig
from .errors import TinylabError
from .model import GPT, build_model
from .run import CHECKPOINT_MARKER, Run

FORMAT = 1
# sha256 (SHA-NI): 1.3 GB/s on one core of the AMD EPYC the tests run on, against 0.5-0.6 GB/s for blake2b and md5
HASH = "sha256"
DATA_FILES = ("model.safetensors", "optim.safetensors")  # what HASH covers: the files whose damage JSON can't show
RUNTIME_FLAGS = ("fused", "foreach", "capturable", "differentiable")  # depend on the device, not the run


class CheckpointError(TinylabError, RuntimeError):
    """A run or checkpoint that cannot be loaded; the message says what to do."""


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (tinylab.paths.atomic_write)."""
    paths.atomic_write(path, json.dumps(obj, indent=1))


# ---------------------------------------------------------------- RNG

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and Python RNG states as JSON-able values."""
    np_state = np.random.get_state()
    state = dict(torch=_b64(torch.get_rng_state()), python=[random.getstate()[0], list(random.getstate()[1]),
                                                            random.getstate()[2]],
                 numpy=[np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else x
                                                             for x in np_state[2:]]])
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---------------------------------------------------------------- optimizer state

def flatten_optimizers(optimizers) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split optimizer state dicts into a flat tensor dict (safetensors) and JSON-able rest."""
    tensors, meta = {}, []
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        scalars = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"{i}.{pid}.{k}"] = v.detach().contiguous()
                else:
                    scalars[f"{pid}.{k}"] = v
        meta.append(dict(param_groups=sd["param_groups"], scalars=scalars))
    return tensors, meta


def restore_optimizers(optimizers, tensors: dict[str, torch.Tensor], meta: list[dict]) -> None:
    if len(meta) != len(optimizers):
        raise CheckpointError(f"checkpoint has {len(meta)} optimizers, this run builds {len(optimizers)}")
    for i, (opt, m) in enumerate(zip(optimizers, meta)):
        state: dict[int, dict] = {}
        for key, t in tensors.items():
            oi, pid, name = key.split(".", 2)
            if int(oi) == i:
                state.setdefault(int(pid), {})[name] = t
        for key, v in m["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        current = opt.state_dict()["param_groups"]
        groups = []
        for saved, cur in zip(m["param_groups"], current):
            g = dict(saved)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            # initial_lr is this run's request (--resume --matrix-lr 0.5 must take effect): keep the new one
            g.update({k: cur[k] for k in (*RUNTIME_FLAGS, "initial_lr") if k in cur})
            groups.append(g)
        opt.load_state_dict(dict(state=state, param_groups=groups))


# ---------------------------------------------------------------- save / load

def save_checkpoint(run: Run, step: int, model: GPT, optimizers, meta: dict, keep: int = 1) -> Path:
    """Write checkpoints/step_<step>/ atomically and prune all but the newest `keep`."""
    return write_checkpoint(run, snapshot(model, optimizers, step, meta), keep)


# Page-locked host memory is scarce, and torch's host cache keeps what it allocated (rounded up to a power of two)
# until CheckpointWriter.release: a snapshot larger than this (its tensors' own bytes) is copied the ordinary way.
PINNED_MAX_BYTES = 1 << 30


@dataclass
class Snapshot:
    """One checkpoint's contents, copied off the live model: what write_checkpoint puts on disk."""
    weights: dict[str, torch.Tensor]  # the model's state dict on the CPU; tied names share one tensor
    optim: dict[str, torch.Tensor]    # flatten_optimizers' tensors on the CPU
    body: dict                        # checkpoint.json
    copied: list = field(default_factory=list)  # CUDA events: the copies off each GPU have landed

    def state_dict(self) -> dict[str, torch.Tensor]:  # what safetensors' save_model reads of a module
        return dict(self.weights)


def snapshot(model: GPT, optimizers, step: int, meta: dict) -> Snapshot:
    """The checkpoint of this moment, every tensor copied to the CPU. Off a GPU, up to PINNED_MAX_BYTES, the copies
    go into page-locked memory and are not waited for (wait on .copied before reading them): 0.01 s for ittybitty's
    0.4 GB against ~0.2 s for ordinary copies (docs/benchmarks.md §3). Tensors that share storage (a tied
    wte/lm_head) stay shared, so that the weights are stored once."""
    tensors, opt_meta = flatten_optimizers(optimizers)
    body = dict(format=FORMAT, step=step, model=model.config.to_dict(), optimizers=opt_meta, rng=rng_state(), **meta)
    sources = (model.state_dict(), tensors)
    unique = {_identity(t): t.detach() for source in sources for t in source.values()}
    gpus = {t.device for t in unique.values() if t.device.type == "cuda"}
    pin = bool(gpus) and sum(t.numel() * t.element_size() for t in unique.values()) <= PINNED_MAX_BYTES
    try:
        host = {key: _host_copy(t, pin) for key, t in unique.items()}
    except RuntimeError:  # no page-locked memory to be had: the ordinary copies
        pin, host = False, {key: _host_copy(t, False) for key, t in unique.items()}
    copies = [{name: host[_identity(t)] for name, t in source.items()} for source in sources]
    copied = [torch.cuda.current_stream(device).record_event() for device in gpus] if pin else []
    return Snapshot(*copies, body, copied)


def _identity(t: torch.Tensor) -> tuple:
    return t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride()


def _host_copy(t: torch.Tensor, pin: bool) -> torch.Tensor:
    if t.device.type != "cuda" or not pin:
        return t.to("cpu", copy=True).contiguous()
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)


def write_checkpoint(run: Run, snap: Snapshot, keep: int = 1) -> Path:
    """Write a snapshot as checkpoints/step_<step>/ atomically and prune all but the newest `keep`."""
    for event in snap.copied:
        event.synchronize()
    step = snap.body["step"]
    root = run.checkpoints_dir
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step_{step:06d}-"))
    old = None
    try:
        digests = {"model.safetensors": _save_tensors(lambda path: save_model(snap, path),  # drops tied duplicates
                                                      tmp / "model.safetensors", snap.weights),
                   "optim.safetensors": _save_tensors(lambda path: save_file(snap.optim, path),
                                                      tmp / "optim.safetensors", snap.optim)}
        write_json(tmp / CHECKPOINT_MARKER, {**snap.body, HASH: digests})  # last: its presence marks it complete
        if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
            old = root / f".old{tmp.name}"
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            os.rename(old, final)  # put the previous checkpoint back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    for stale in run.checkpoints()[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


class CheckpointWriter:
    """Checkpoints written on a thread while training goes on. save() takes the snapshot and returns; the thread
    writes it as save_checkpoint would (safetensors writes without holding the GIL), which the steps no longer wait
    for. One write at a time: the next save(), and wait(), first let the previous one finish, and raise its error if
    it failed; poll() raises it as soon as the write has ended. The checkpoint before a failed one stays the newest
    on disk. release() hands back the page-locked memory of the copies once training is over."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, run: Run, step: int, model: GPT, optimizers, meta: dict, keep: int = 1) -> None:
        self.wait()
        snap = snapshot(model, optimizers, step, meta)
        self._thread = threading.Thread(target=self._write, args=(run, snap, keep), name="tinylab-checkpoint")
        self._thread.start()

    def _write(self, run: Run, snap: Snapshot, keep: int) -> None:
        try:
            write_checkpoint(run, snap, keep)
        except BaseException as e:  # handed to the training thread at its next save() or wait()
            self._error = e

    def poll(self) -> None:
        """Raise the error of a write that has ended in failure; return at once otherwise."""
        if self._thread is None or not self._thread.is_alive():
            self.wait()

    def release(self) -> None:
        """Free the page-locked memory torch's host cache kept from the copies (where this torch can: 2.9 and
        later), once no write is in flight."""
        empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
        if self._thread is None and empty is not None and torch.cuda.is_available():
            empty()

    def join(self) -> None:
        """Return once no write is in flight (its error, if any, kept for wait)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self, raise_error: bool = True) -> BaseException | None:
        """Return once no write is in flight; raise the error of the last one if it failed (or return it)."""
        self.join()
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error
        return error


def _save_tensors(save, path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """save(str(path)) with safetensors, writing `tensors`; return the file's sha256 (_written_digest). Its I/O
    errors (a full disk) become the OSError they are.

    safetensors reports them as SafetensorError("... (os error 28)"), which tinylab.errors.explain
    could not tell from a bug; as OSError(ENOSPC) it becomes the one-line disk-full message."""
    from safetensors import SafetensorError

    try:
        save(str(path))
    except SafetensorError as e:
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m is None:
            raise
        raise OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) from e
    return _written_digest(path, tensors)


def _written_digest(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """The sha256 of the safetensors file just written at `path`, taken of the tensors it was written from: the
    file's header (read back: a few KB), then each tensor's bytes in the order of the header's offsets. So the
    hundreds of MB are not read back to be hashed, and the cost does not depend on the file still being in the page
    cache (where it is, the two take the same: ~0.16 s for 150 MB on the writer thread here). A file not laid out as
    this expects (a safetensors that pads between tensors; a big-endian machine, where it writes byte-swapped copies)
    is hashed from disk instead."""
    with open(path, "rb") as f:
        size = f.read(8)
        header = f.read(int.from_bytes(size, "little"))
    h, end = hashlib.new(HASH, size + header), 0
    spans = sorted((v["data_offsets"], k) for k, v in json.loads(header).items() if k != "__metadata__")
    for (start, stop), name in spans:
        data = _raw_bytes(tensors[name]) if name in tensors and sys.byteorder == "little" else None
        if data is None or start != end or stop - start != data.nbytes:
            return file_digest(path)
        h.update(data)  # hashlib lets go of the GIL over large buffers: the training thread runs meanwhile
        end = stop
    return h.hexdigest() if 8 + len(header) + end == path.stat().st_size else file_digest(path)


def _raw_bytes(t: torch.Tensor) -> np.ndarray:
    """A tensor's bytes as safetensors writes them (row-major), without a copy where it is contiguous."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


def file_digest(path: Path) -> str:
    """The sha256 of a file, hashed from a memory map in one call (0.89 GB/s here against 0.75 GB/s in 1 MB reads)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # an empty file cannot be mapped
            return hashlib.new(HASH).hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return hashlib.new(HASH, data).hexdigest()


def read_meta(ckpt: Path) -> dict:
    try:
        meta = json.loads((Path(ckpt) / CHECKPOINT_MARKER).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ckpt}/{CHECKPOINT_MARKER} is unreadable ({e}); delete {ckpt} to fall back "
                              f"to an older checkpoint") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{ckpt}/{CHECKPOINT_MARKER} is damaged (not an object with a step and a model); "
                              f"delete {ckpt} to fall back to an older checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt} has checkpoint format {meta.get('format')}, this tinylab reads {FORMAT}")
    digests = meta.get(HASH, {})  # absent: written before checkpoints recorded it, and loaded unchecked
    if not (isinstance(digests, dict) and set(digests) <= set(DATA_FILES)
            and all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in digests.values())):
        raise CheckpointError(f"{ckpt}/{CHECKPOINT_MARKER} is damaged ({HASH!r} is not an object from "
                              f"{' or '.join(DATA_FILES)} to 64 hex digits); delete {ckpt} to fall back to an older "
                              f"checkpoint")
    return meta


def verify(ckpt: Path, name: str, meta: dict) -> None:
    """Raise CheckpointError where data file `name` of a checkpoint no longer has the sha256 recorded when it was
    written. Nothing recorded (an older checkpoint) is nothing to check; a missing file is left to the load to
    report."""
    expected = meta.get(HASH, {}).get(name)
    path = Path(ckpt) / name
    if expected is None or not path.is_file():
        return
    if file_digest(path) != expected:
        earlier = [p for p in Run(path.parent.parent.parent).checkpoints() if p.name < path.parent.name]
        fallback = (f"move {ckpt} aside (nothing was deleted) to use the run's earlier checkpoint {earlier[-1].name}, "
                    "or train the run again" if earlier else "the run keeps no earlier checkpoint: train it again "
                    "(nothing was deleted)")
        raise CheckpointError(f"{path} is damaged: its bytes changed since it was written ({HASH} differs from the "
                              f"one in {CHECKPOINT_MARKER}), so its numbers cannot be trusted; {fallback}")


RESUME_KEYS = ("optimizers", "rng", "loader", "tokenizer", "metrics_bytes", "elapsed")  # what a resume reads


def check_resumable(ckpt: Path, meta: dict) -> None:
    """A checkpoint that a resume can go on from: the training state it reads is all there."""
    missing = [k for k in RESUME_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{ckpt}/{CHECKPOINT_MARKER} is damaged (no {', '.join(missing)}); delete {ckpt} to "
                              f"resume from an older checkpoint")


def finished(ckpt: Path | None, model: GPTConfig | None = None, steps: int | None = None) -> bool:
    """Whether ckpt is the last checkpoint of a finished run, of `model` trained for `steps` when given: a run of
    another architecture or length is not the run asked for (tinylab.train.ensure_run, a sweep's point status)."""
    if ckpt is None:
        return False
    meta = read_meta(ckpt)
    return (bool(meta.get("finished")) and steps in (None, meta["step"])
            and (model is None or meta["model"] == model.to_dict()))


def _load_tensors(what: str, fn, ckpt: Path):
    """Run a safetensors load, turning a damaged file into one CheckpointError that says what to do."""
    from safetensors import SafetensorError

    try:
        return fn()
    except (SafetensorError, FileNotFoundError, RuntimeError) as e:  # truncated, missing, or another shape
        detail = " ".join(str(e).split())[:200]  # one line: load_state_dict's errors span several
        raise CheckpointError(f"{ckpt}/{what} is damaged or missing ({type(e).__name__}: {detail}); delete "
                              f"{ckpt} to fall back to an older checkpoint, or train the run again") from None


def load_checkpoint(ckpt: Path, model: GPT, optimizers=None, device="cpu", meta: dict | None = None) -> dict:
    """Load weights (and optimizer state, RNG) from a checkpoint dir into existing objects; return its meta
    (`meta`: its checkpoint.json when the caller has read it already)."""
    ckpt = Path(ckpt)
    meta = read_meta(ckpt) if meta is None else meta
    if meta["model"] != model.config.to_dict():
        raise CheckpointError(f"{ckpt} holds a different architecture ({GPTConfig.from_dict(meta['model']).describe()}) "
                              f"than requested ({model.config.describe()}): use a new --run name or the same knobs")
    verify(ckpt, "model.safetensors", meta)  # before its bytes are used; optim.safetensors only when it is read
    _load_tensors("model.safetensors", lambda: st_load_model(model, str(ckpt / "model.safetensors"), strict=True,
                                                             device=str(device)), ckpt)
    if optimizers is not None:
        verify(ckpt, "optim.safetensors", meta)
        tensors = _load_tensors("optim.safetensors", lambda: load_file(str(ckpt / "optim.safetensors"),
                                                                       device=str(device)), ckpt)
        restore_optimizers(optimizers, tensors, meta["optimizers"])
        set_rng_state(meta["rng"])
    return meta


def locate(source, step: int | None = None) -> tuple[Run, Path]:
    """(run, checkpoint dir) from a run name, a run directory or a checkpoint directory."""
    p = Path(str(source)).expanduser()
    if p.is_dir() and (p / CHECKPOINT_MARKER).is_file():
        if step is not None and p.name != f"step_{step:06d}":
            raise CheckpointError(f"{p} is the checkpoint of {p.name}, not step {step}: pass the run instead")
        return Run(p.parent.parent), p
    run = Run.find(source)
    return run, run.checkpoint(step)


def load_tokenizer(run: Run, info: dict):
    """The run's tokenizer: its own copy if saved, else the shared one; the hash must match."""
    from .tokenizer import Tokenizer, TokenizerError, tokenizer_dir

    if not run.tokenizer_dir.is_dir():  # runs from before per-run copies
        shared = tokenizer_dir(info["name"])
        if not shared.is_dir():
            raise CheckpointError(f"run {run.name!r} has no tokenizer: neither its own copy ({run.tokenizer_dir}) "
                                  f"nor the shared {info['name']} ({shared}) exists. Put the tokenizer it was "
                                  f"trained with (hash {info['hash'][:12]}) in {run.tokenizer_dir}")
        tok = Tokenizer.load(shared)
        if tok.hash != info["hash"]:
            raise TokenizerError(f"run {run.name!r} was trained with tokenizer hash {info['hash'][:12]}, but the "
                                 f"shared {shared} (the run has no copy of its own) has {tok.hash[:12]}: it was "
                                 f"retrained since; restore it from a backup, or train the run again")
        return tok
    try:  # retraining would not help here (the advice of a shared tokenizer's errors): the run needs its own
        tok = Tokenizer.load(run.tokenizer_dir)
    except TokenizerError as e:
        cause = str(e).split("; ")[0]
        raise TokenizerError(f"the tokenizer copy of run {run.name!r} is damaged ({cause}): "
                             f"{_restore_hint(run, info)}") from None
    if tok.hash != info["hash"]:
        raise TokenizerError(f"run {run.name!r} was trained with tokenizer hash {info['hash'][:12]}, but its copy in "
                             f"{run.tokenizer_dir} has {tok.hash[:12]} (replaced?): {_restore_hint(run, info)}")
    return tok


def _restore_hint(run: Run, info: dict) -> str:
    """How to get a run's tokenizer back: the shared copy if it is the same tokenizer, else a backup."""
    from .tokenizer import Tokenizer, TokenizerError, tokenizer_dir

    shared = tokenizer_dir(info["name"])
    try:
        same = Tokenizer.load(shared).hash == info["hash"]
    except TokenizerError:
        same = False
    if same:
        return f"copy {shared} (the same tokenizer) over it, e.g. `cp -r {shared}/. {run.tokenizer_dir}/`"
    return (f"restore it from a backup (tokenizer {info['name']}, hash {info['hash'][:12]}); the run cannot be "
            f"resumed or sampled without it")


def load_model(source, device="cpu", step: int | None = None):
    """(model in eval mode, tokenizer, meta) of a run's newest (or `step`'s) checkpoint, for sampling and analysis."""
    run, ckpt = locate(source, step)
    meta = read_meta(ckpt)
    model = build_model(GPTConfig.from_dict(meta["model"]), device=device)
    load_checkpoint(ckpt, model, device=device, meta=meta)
    model.eval()
    tokenizer = load_tokenizer(run, meta["tokenizer"])
    meta = {k: v for k, v in meta.items() if k not in ("optimizers", "rng")}
    meta["checkpoint"], meta["run"] = str(ckpt), run.name
    return model, tokenizer, meta
