"""Import a nanochat base checkpoint (October 2025) as a tinylab run.

    python -m tinylab.import_nanochat ~/.cache/nanochat/base_checkpoints/d20 --run d20 [--step N] [--tokenizer DIR]

nanochat's files (nanochat/checkpoint_manager.py, scripts/base_train.py, scripts/tok_train.py):

    <base>/base_checkpoints/<tag>/model_<step:06d>.pt    torch.save(model.state_dict()); the keys may carry
                                                         torch.compile's "_orig_mod." prefix, wte may be bf16
                                  meta_<step:06d>.json   {"step", "val_bpb", "model_config": {sequence_len,
                                                         vocab_size, n_layer, n_head, n_kv_head, n_embd}, ...}
                                  optim_<step:06d>.pt    optimizer state: not needed, not read
    <base>/tokenizer/tokenizer.pkl                       a pickled tiktoken Encoding: read by
                                                         tinylab.tiktoken_pickle, which runs nothing in it
                     token_bytes.pt                      not read: nanochat counts the UTF-8 bytes of each
                                                         token's *decoded* text (a token holding part of a
                                                         character counts 3 for U+FFFD), tinylab the raw bytes

Why the weights mean the same in tinylab's GPT (nanochat/gpt.py, October 2025): identical module
names (transformer.wte, transformer.h.<i>.attn.c_{q,k,v,proj}, .mlp.c_{fc,proj}, lm_head), head_dim =
n_embd / n_head, rotary over pairs (i, i + head_dim/2) with base 10,000 and the same sign, QK RMS-norm
after rotary, weightless F.rms_norm after wte, before each sublayer and at the end, ReLU² MLP of width
4·n_embd, logits 15·tanh(x/15), untied wte / lm_head. One difference: nanochat stores its cos/sin
tables in bf16, tinylab in fp32 (see tests/test_import_nanochat.py for what that does to the logits).

`convert` reads and checks everything and returns plain objects; `write_run` stores them in
today's run layout. Later nanochat (2026: value embeddings, per-layer scalars, sliding windows,
padded vocabularies) is refused with a message naming the feature.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from .errors import ArgumentParser, TinylabError, cli

MODEL_CONFIG = {"sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd"}
PREFIX = "_orig_mod."  # torch.compile's wrapper module; nanochat saves the unwrapped model, but be lenient
LATER_FEATURES = {  # state-dict names of nanochat after the seed era -> what they are
    "value_embeds": "value embeddings (ResFormer)", "ve_gate": "value-embedding gates",
    "resid_lambdas": "per-layer residual scalars", "x0_lambdas": "per-layer x0 skip scalars",
    "smear": "the smear gate", "backout": "the backout scalar"}


class NanochatImportError(TinylabError):
    """A nanochat checkpoint tinylab cannot represent or read; the message names what and why."""


def find_step(checkpoint_dir: Path, step: int | None) -> int:
    """The requested step, or the newest model_<step>.pt (nanochat's find_last_step)."""
    steps = sorted(int(m.group(1)) for p in checkpoint_dir.glob("model_*.pt")
                   if (m := re.fullmatch(r"model_(\d+)\.pt", p.name)))
    if not steps:
        tags = sorted(p.name for p in checkpoint_dir.iterdir() if p.is_dir()) if checkpoint_dir.is_dir() else []
        hint = f"; it has model directories {tags}: pass one of them" if tags else ""
        where = "in" if checkpoint_dir.is_dir() else "at (no such directory)"
        raise NanochatImportError(f"no model_<step>.pt {where} {checkpoint_dir}{hint or ''}: pass nanochat's "
                                  f"base_checkpoints/<tag> directory, e.g. ~/.cache/nanochat/base_checkpoints/d20")
    if step is not None and step not in steps:
        raise NanochatImportError(f"{checkpoint_dir} has no step {step}; it has {steps}")
    return steps[-1] if step is None else step


def to_config(model_config: dict):
    """nanochat's GPTConfig kwargs as a tinylab GPTConfig."""
    from .config import ConfigError, GPTConfig

    window = model_config.get("window_pattern", "L")
    if set(str(window)) != {"L"}:
        raise NanochatImportError(f"model_config.window_pattern={window!r} is sliding-window attention "
                                  f"(later nanochat), which tinylab's GPT does not have")
    unknown = set(model_config) - MODEL_CONFIG - {"window_pattern"}
    missing = MODEL_CONFIG - set(model_config)
    if unknown or missing:
        raise NanochatImportError(f"model_config has unknown fields {sorted(unknown)} / lacks {sorted(missing)}: "
                                  f"this is not an October 2025 nanochat checkpoint")
    c = model_config
    try:
        return GPTConfig(depth=c["n_layer"], model_dim=c["n_embd"], n_head=c["n_head"], n_kv_head=c["n_kv_head"],
                         vocab_size=c["vocab_size"], sequence_len=c["sequence_len"])
    except ConfigError as e:
        raise NanochatImportError(f"model_config {c} is not a tinylab architecture: {e}") from e


def load_state_dict(path: Path, config) -> dict[str, torch.Tensor]:
    """nanochat's weights as fp32 tensors under tinylab's names, every key and shape checked."""
    from .model import GPT

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses code; truncation fails too
        raise NanochatImportError(f"{path} is not a readable weights-only torch file ({e})") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in raw.items()):
        raise NanochatImportError(f"{path} holds a {type(raw).__name__}, not nanochat's dict of named tensors: pass "
                                  f"the model_<step>.pt that nanochat's base training saved")
    weights = {k.removeprefix(PREFIX): v for k, v in raw.items()}
    later = sorted({what for k in weights for name, what in LATER_FEATURES.items() if name in k})
    if later:
        raise NanochatImportError(f"{path} holds {', '.join(later)}: a later nanochat architecture that "
                                  f"tinylab's GPT does not have; import an October 2025 base checkpoint")
    with torch.device("meta"):
        want = GPT(config).state_dict()
    unknown, missing = sorted(set(weights) - set(want)), sorted(set(want) - set(weights))
    if unknown or missing:
        raise NanochatImportError(f"{path}: unknown tensors {unknown[:5]}, missing {missing[:5]}: "
                                  f"not a nanochat base model of {config.describe()}")
    for k, v in weights.items():
        if v.shape != want[k].shape:
            raise NanochatImportError(f"{path}: {k} has shape {tuple(v.shape)}, the meta's model_config "
                                      f"gives {tuple(want[k].shape)} (a padded vocabulary is later nanochat)")
    bad = [k for k, v in weights.items() if not torch.isfinite(v).all()]
    if bad:
        raise NanochatImportError(f"{path}: {', '.join(bad[:3])} hold NaN or inf values: the checkpoint is damaged "
                                  f"or was saved after training diverged; import an earlier step (--step)")
    return {k: v.float() for k, v in weights.items()}  # CUDA runs keep wte in bf16


def load_tokenizer(tokenizer_dir: Path, vocab_size: int, name: str):
    """nanochat's tokenizer.pkl as a tinylab Tokenizer with the same ids (specials right after the ranks)."""
    from .tiktoken_pickle import load_encoding_state
    from .tokenizer import BOS, Tokenizer, TokenizerError

    pkl = tokenizer_dir / "tokenizer.pkl"
    if not pkl.is_file():
        raise NanochatImportError(f"no tokenizer.pkl in {tokenizer_dir}: nanochat keeps it in <base>/tokenizer/, "
                                  f"two levels above the checkpoint; point --tokenizer at it")
    state = load_encoding_state(pkl)
    ranks, specials = state["mergeable_ranks"], state["special_tokens"]
    order = sorted(specials, key=specials.get)
    if [specials[s] for s in order] != list(range(len(ranks), len(ranks) + len(order))) or BOS not in specials:
        raise NanochatImportError(f"{pkl}: special tokens {specials} are not {BOS} and friends numbered right "
                                  f"after the {len(ranks)} ranks, as nanochat's tokenizer makes them")
    try:
        tok = Tokenizer(ranks, state["pat_str"], order, name=name)
    except TokenizerError as e:
        raise NanochatImportError(f"{pkl}: {e}") from e
    except ValueError as e:  # tiktoken refuses the split pattern
        raise NanochatImportError(f"{pkl}: its pat_str is not a pattern tiktoken can use ({e}); use the "
                                  f"tokenizer.pkl nanochat wrote") from e
    if tok.vocab_size != vocab_size:
        raise NanochatImportError(f"{pkl} has {tok.vocab_size} tokens but the model's vocab_size is {vocab_size}: "
                                  f"use the tokenizer this model was trained with (--tokenizer)")
    return tok


def convert(checkpoint_dir, step: int | None = None, tokenizer_dir=None):
    """(GPTConfig, state_dict, Tokenizer, nanochat meta) of a nanochat base checkpoint directory."""
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    step = find_step(checkpoint_dir, step)
    meta_path = checkpoint_dir / f"meta_{step:06d}.json"
    try:
        meta = json.loads(meta_path.read_text())
        model_config = meta["model_config"]
        if not isinstance(model_config, dict):
            raise TypeError(f"model_config is a {type(model_config).__name__}, not an object")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise NanochatImportError(f"{meta_path} is missing or has no model_config ({e!r}); nanochat writes it "
                                  f"next to model_{step:06d}.pt") from None
    config = to_config(model_config)
    state_dict = load_state_dict(checkpoint_dir / f"model_{step:06d}.pt", config)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else checkpoint_dir.parent.parent / "tokenizer"
    tokenizer = load_tokenizer(tokenizer_dir, config.vocab_size, f"nanochat-{checkpoint_dir.name}")
    return config, state_dict, tokenizer, {**meta, "step": step, "checkpoint_dir": str(checkpoint_dir)}


def write_run(run: str, config, state_dict, tokenizer, meta: dict, *, force: bool = False) -> Path:
    """Store a converted model as run `run`, built in a temp dir and renamed into place: config.json,
    tokenizer/, checkpoints/step_<N>/{model.safetensors, checkpoint.json} (no optimizer state)."""
    from .calc import flops_per_token, param_counts
    from .checkpoint import save_checkpoint
    from .model import build_model
    from .run import Run

    target = Run.at(run)
    if target.dir.exists() and any(target.dir.iterdir()) and not force:
        raise NanochatImportError(f"run {run!r} already exists ({target.dir}): pick another --run, or --force")
    model = build_model(config)
    model.load_state_dict(state_dict, strict=True)
    user = meta.get("user_config") if isinstance(meta.get("user_config"), dict) else {}  # only read for hints
    source = {"nanochat": meta["checkpoint_dir"], "step": meta["step"], "val_bpb": meta.get("val_bpb"),
              "user_config": user}
    tok_info = dict(name=tokenizer.name, hash=tokenizer.hash)
    target.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Run(Path(tempfile.mkdtemp(dir=target.dir.parent, prefix=f".{target.dir.name}.tmp-")), run)
    try:
        tokenizer.save(tmp.tokenizer_dir)
        save_checkpoint(tmp, meta["step"], model, [], dict(run=run, tokenizer=tok_info, finished=True,
                                                           val_bpb=meta.get("val_bpb"), imported=source))
        batch = user.get("total_batch_size")
        tmp.write_config(dict(
            run=run, preset=None, model=config.to_dict(), tokenizer=tok_info, imported=source,
            derived=dict(params=param_counts(config)["total"], flops_per_token=flops_per_token(config),
                         total_batch_size=batch, num_iterations=meta["step"]),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds")))
        os.chmod(tmp.dir, 0o755)  # mkdtemp makes it 0700
        old = target.dir.with_name(f".{target.dir.name}.old-{os.getpid()}")
        if target.dir.exists():  # --force: the old run goes only once the new one is complete
            os.rename(target.dir, old)
        os.rename(tmp.dir, target.dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp.dir, ignore_errors=True)
    return target.dir


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m tinylab.import_nanochat", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint_dir", help="nanochat's base_checkpoints/<tag> (model_<step>.pt, meta_<step>.json)")
    ap.add_argument("--run", required=True, help="name of the tinylab run to create under $TINYLAB_HOME/runs")
    ap.add_argument("--step", type=int, help="checkpoint step to import (default: the newest)")
    ap.add_argument("--tokenizer", help="nanochat tokenizer directory (default: <checkpoint_dir>/../../tokenizer)")
    ap.add_argument("--force", action="store_true", help="replace an existing run of that name")
    args = ap.parse_args(argv)
    config, state_dict, tokenizer, meta = convert(args.checkpoint_dir, args.step, args.tokenizer)
    run_dir = write_run(args.run, config, state_dict, tokenizer, meta, force=args.force)
    print(f"imported nanochat step {meta['step']} ({config.describe()}) as run {args.run!r}: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
