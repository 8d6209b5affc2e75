"""Checkpoints that can be resumed exactly and loaded without unpickling anything.

Layout of one checkpoint, $TINYLAB_HOME/runs/<run>/checkpoints/step_NNNNNN/:

    model.safetensors   weights (safetensors.torch.save_model: a tied wte/lm_head is stored once)
    optim.safetensors   optimizer state tensors, keyed "<optimizer>.<param index>.<name>"
    checkpoint.json     step, model config, optimizer hyperparameters and scalar state,
                        loader state, RNG states (base64), tokenizer name + hash,
                        metrics.jsonl byte offset, finished flag

A checkpoint is written into a hidden temp directory and renamed into place in one
os.rename, so a crash leaves either the complete new checkpoint or none; older ones are
pruned only afterwards. Re-saving a step renames its old directory aside (.old-*), renames the
new one in, and only then deletes the old. The newest complete step directory is loaded.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model as st_load_model, save_file, save_model

from . import paths
from .config import GPTConfig
from .model import GPT, build_model

FORMAT = 1
CKPT_DIR = "checkpoints"
RUNTIME_FLAGS = ("fused", "foreach", "capturable", "differentiable")  # depend on the device, not the run


class CheckpointError(RuntimeError):
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


# ---------------------------------------------------------------- save / find / load

def save_checkpoint(run_dir: Path, step: int, model: GPT, optimizers, meta: dict, keep: int = 1) -> Path:
    """Write checkpoints/step_<step>/ atomically and prune all but the newest `keep`."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step_{step:06d}-"))
    old = None
    try:
        save_model(model, str(tmp / "model.safetensors"))
        tensors, opt_meta = flatten_optimizers(optimizers)
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp / "optim.safetensors"))
        body = dict(format=FORMAT, step=step, model=model.config.to_dict(), optimizers=opt_meta,
                    rng=rng_state(), **meta)
        write_json(tmp / "checkpoint.json", body)
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
    for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "checkpoint.json").is_file())


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def read_meta(ckpt: Path) -> dict:
    try:
        meta = json.loads((Path(ckpt) / "checkpoint.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt}/checkpoint.json is unreadable ({e}); delete {ckpt} to fall back "
                              f"to an older checkpoint") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt} has checkpoint format {meta.get('format')}, this tinylab reads {FORMAT}")
    return meta


def load_checkpoint(ckpt: Path, model: GPT, optimizers=None, device="cpu") -> dict:
    """Load weights (and optimizer state, RNG) from a checkpoint dir into existing objects; return its meta."""
    ckpt = Path(ckpt)
    meta = read_meta(ckpt)
    if meta["model"] != model.config.to_dict():
        raise CheckpointError(f"{ckpt} holds a different architecture ({GPTConfig.from_dict(meta['model']).describe()}) "
                              f"than requested ({model.config.describe()}): use a new --run name or the same knobs")
    st_load_model(model, str(ckpt / "model.safetensors"), strict=True, device=str(device))
    if optimizers is not None:
        restore_optimizers(optimizers, load_file(str(ckpt / "optim.safetensors"), device=str(device)),
                           meta["optimizers"])
        set_rng_state(meta["rng"])
    return meta


def resolve(run_or_path) -> Path:
    """A checkpoint directory from a run name, a run directory or a checkpoint directory."""
    p = Path(run_or_path)
    if not p.is_dir():
        p = paths.home() / "runs" / str(run_or_path)
    if (p / "checkpoint.json").is_file():
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        have = sorted(d.name for d in (paths.home() / "runs").glob("*") if d.is_dir()) if (paths.home() / "runs").is_dir() else []
        raise CheckpointError(f"no checkpoint for run {str(run_or_path)!r} (looked in {p}); existing runs: "
                              f"{', '.join(have) or 'none'}. Train it first: python -m tinylab.train --run NAME")
    return ckpt


def load_tokenizer(run_dir: Path, info: dict):
    """The run's tokenizer: its own copy if saved, else the shared one; the hash must match."""
    from .tokenizer import Tokenizer

    own = Path(run_dir) / "tokenizer"
    where = own if own.is_dir() else paths.home() / "tokenizer" / info["name"]
    tok = Tokenizer.load(where)
    tok.check_hash(info["hash"], what=f"run {Path(run_dir).name}")
    return tok


def load_model(run_or_path, device="cpu"):
    """(model in eval mode, tokenizer, meta) of the newest checkpoint of a run, for sampling and analysis."""
    ckpt = resolve(run_or_path)
    meta = read_meta(ckpt)
    model = build_model(GPTConfig.from_dict(meta["model"]), device=device)
    st_load_model(model, str(ckpt / "model.safetensors"), strict=True, device=str(device))
    model.eval()
    tokenizer = load_tokenizer(ckpt.parent.parent, meta["tokenizer"])
    meta = {k: v for k, v in meta.items() if k not in ("optimizers", "rng")}
    meta["checkpoint"] = str(ckpt)
    return model, tokenizer, meta
