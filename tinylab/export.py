"""Export a run to Hugging Face transformers' own NanoChat architecture (no custom code).

    python -m tinylab.export --run itty-1 --out exports/itty-1 [--step N] [--dtype bf16] [--push-to-hub me/itty-1]

The directory loads with transformers >= 5:

    model = AutoModelForCausalLM.from_pretrained(DIR)   # NanoChatForCausalLM
    tok = AutoTokenizer.from_pretrained(DIR)             # fast BPE; prepends <|bos|> like tinylab's documents

Why the numbers match (transformers/models/nanochat/modeling_nanochat.py, 5.x):
- rotary: rotate_half pairs channel i with i + head_dim/2, angles pos·10000^(-2i/head_dim) from
  position 0, with the same sign as tinylab.model.apply_rotary_emb; q and k are RMS-normed after it
- RMSNorm without weights after wte, before attention and MLP, and at the end; HF normalises in
  fp32 with rms_norm_eps, tinylab's F.rms_norm(eps=None) uses torch.finfo(float32).eps, so we write that
- ReLU² MLP (hidden_act "relu2", width 4·model_dim), no biases, logits 15·tanh(x/15)
- GQA through num_key_value_heads; tied embeddings through tie_word_embeddings

The files: config.json, generation_config.json, model.safetensors, tokenizer.json +
tokenizer_config.json, README.md (a model card). DIR is built in a temporary directory
next to it and renamed into place, so a crash never leaves half an export. --force replaces a previous
export, never tinylab's own data (check_target).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from . import paths
from .errors import ArgumentParser, RunFailedError, TinylabError, cli
from .run import Run, is_sweep_dir

# tinylab GPTConfig fields and what NanoChatConfig calls them (head_dim is written too: HF reads it if set)
CONFIG_FIELDS = {"depth": "num_hidden_layers", "model_dim": "hidden_size", "n_head": "num_attention_heads",
                 "head_dim": "head_dim", "n_kv_head": "num_key_value_heads", "vocab_size": "vocab_size",
                 "sequence_len": "max_position_embeddings", "tie_embeddings": "tie_word_embeddings"}
# tinylab module names inside a block -> NanoChatDecoderLayer's
BLOCK_KEYS = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
              "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ExportError(TinylabError):
    """A run that cannot be exported, or an export directory in the way; the message says what to do."""


class PushError(RunFailedError):
    """The export is complete but the upload to the Hugging Face Hub failed."""


# ------------------------------------------------------------------ model

def hf_config(config, tokenizer=None):
    """The NanoChatConfig of a tinylab GPTConfig; one ExportError for a field NanoChat has no slot for."""
    from transformers import NanoChatConfig

    from .model import LOGIT_SOFTCAP, ROPE_BASE

    knobs = config.to_dict()
    for field in knobs:
        if field not in CONFIG_FIELDS:
            raise ExportError(f"the architecture field {field!r} (= {knobs[field]!r}) has no counterpart in "
                              f"transformers' NanoChat: export a run without it, or extend tinylab.export")
    bos = tokenizer.bos_id if tokenizer is not None else None
    return NanoChatConfig(
        **{CONFIG_FIELDS[k]: v for k, v in knobs.items()},
        intermediate_size=config.mlp_dim, hidden_act="relu2",
        rms_norm_eps=torch.finfo(torch.float32).eps,  # = F.rms_norm's default for fp32 activations
        rope_parameters={"rope_type": "default", "rope_theta": float(ROPE_BASE)},
        final_logit_softcapping=LOGIT_SOFTCAP, attention_bias=False,
        # a document ends where the next one's BOS would start, so BOS is also the end of text;
        # no pad id in the model: padding_idx would freeze the BOS row of wte in fine-tuning
        bos_token_id=bos, eos_token_id=bos, pad_token_id=None)


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """tinylab GPT weights under NanoChatForCausalLM's names (lm_head only when untied)."""
    out = {}
    for key, tensor in model.state_dict().items():
        if key == "transformer.wte.weight":
            out["model.embed_tokens.weight"] = tensor
        elif key == "lm_head.weight":
            if not model.config.tie_embeddings:
                out[key] = tensor
        else:  # transformer.h.<i>.<attn|mlp>.<module>.weight
            parts = key.split(".")
            module = BLOCK_KEYS.get(".".join(parts[3:5])) if len(parts) == 6 else None
            if module is None:
                raise ExportError(f"the weight {key} has no counterpart in transformers' NanoChat: "
                                  f"export a run without it, or extend tinylab.export.BLOCK_KEYS")
            out[f"model.layers.{parts[2]}.{module}.{parts[5]}"] = tensor
    return out


def to_transformers(model, tokenizer=None, dtype: torch.dtype = torch.float32):
    """A NanoChatForCausalLM (eval mode) with the weights of a tinylab GPT."""
    from transformers import GenerationConfig, NanoChatForCausalLM

    config = hf_config(model.config, tokenizer)
    hf = NanoChatForCausalLM(config)
    weights = hf_state_dict(model)
    if config.tie_word_embeddings:  # one Parameter under both names in HF too
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    hf.load_state_dict(weights, strict=True)
    hf.to(dtype)
    bos = config.bos_token_id
    hf.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=bos, pad_token_id=bos)
    return hf.eval()


# ------------------------------------------------------------------ tokenizer

def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """tiktoken's ranks as an ordered merge list for a `tokenizers` BPE.

    tiktoken merges, anywhere in a chunk, the adjacent pair whose concatenation has the lowest
    rank; a `tokenizers` BPE merges the adjacent pair that comes first in its merge list. Listing
    every split (l, r) of a token into two tokens at that token's rank makes the two agree (as
    transformers' TikTokenConverter does); only two different splits of one token overlapping in
    one chunk could order differently, and the tests find no such case on 300k characters.
    """
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def hf_tokenizer(tokenizer, model_max_length: int):
    """A transformers fast tokenizer with the same ids as a tinylab Tokenizer.

    Byte-level BPE (GPT-2's byte-to-unicode alphabet) over the same split pattern; the special
    tokens keep their ids after the ranks. Calling it prepends <|bos|> (add_special_tokens=True,
    the default), as every tinylab document starts with one; split_special_tokens keeps the text
    "<|bos|>" ordinary text, as tinylab's encode does.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = bytes_to_unicode()
    text = lambda b: "".join(alphabet[x] for x in b)  # noqa: E731
    vocab = {text(tok): rank for tok, rank in tokenizer.ranks.items()}
    merges = [(text(a), text(b)) for a, b in bpe_merges(tokenizer.ranks)]
    # ignore_merges: a chunk that is itself a token is that token, as in tiktoken
    bpe = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    specials = sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.get)
    bpe.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    got = {s: bpe.token_to_id(s) for s in specials}
    if got != tokenizer.special_tokens:
        raise ExportError(f"special tokens got ids {got} in the converted tokenizer instead of "
                          f"{tokenizer.special_tokens}: the tokenizer's ranks are not 0..N-1 before them")
    bos = "<|bos|>"
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=bos, pad_token=bos,
                                   split_special_tokens=True, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False)


# ------------------------------------------------------------------ model card

def run_evaluations(run) -> list[dict]:
    """The latest record of each evaluation kind in the run's metrics (anything but train / sample lines)."""
    latest = {}
    for rec in run.metrics.read():
        if rec.get("kind") not in ("train", "sample", None):
            latest[rec["kind"]] = rec
    return list(latest.values())


SINGULAR = {"tasks": "task", "phenomena": "phenomenon"}


def card_rows(record: dict) -> list[str]:
    """Model-card table rows of one evaluation record: its numbers, then each task's or phenomenon's
    (a `core` record's `tasks`, a `probes` record's `phenomena`: centered accuracy, else accuracy)."""
    skip, rows = {"kind", "step", "tokens", "flops", "elapsed", "seconds", "n", "truncated", "max_per_task"}, []
    head = f"| {record['kind']} | {record.get('step', '')} |"
    for k, v in record.items():
        if isinstance(v, dict):
            rows += [f"{head} {SINGULAR.get(k, k)}: {name} | "
                     f"{part.get('centered', part.get('accuracy')):.4g} |" for name, part in v.items()]
        elif k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.insert(0, f"{head} {k} | {v:.4g} |")
    return rows


def model_card(title: str, where: str, config, meta: dict, run: dict, evaluations: list[dict]) -> str:
    """README.md for the export: architecture, parameter split, training tokens, val bpb, evaluations.

    `where` is what from_pretrained takes in the usage example: the Hub repo or the directory.
    """
    from .calc import param_counts

    p = param_counts(config)
    lm_head = "shared with wte (tied)" if config.tie_embeddings else f"{p['lm_head']:,}"
    batch = run.get("derived", {}).get("total_batch_size")
    tokens = f"{meta['step'] * batch:,} ({meta['step']:,} steps × {batch:,})" if batch else "unknown"
    bpb = meta.get("val_bpb")
    evals = [row for e in evaluations for row in card_rows(e)]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [nanochat, tinylab]", "---",
        f"# {title}", "",
        ("A tiny GPT trained with tinylab and exported to transformers' built-in NanoChat architecture "
         "(`NanoChatForCausalLM`, no custom code)."), "",
        "## Architecture", "",
        (f"{config.describe()}: rotary embeddings (base 10,000), QK-norm, ReLU² MLP of width "
         f"{config.mlp_dim}, RMSNorm without weights, no biases, logits soft-capped at 15·tanh(x/15)."), "",
        "| part | parameters |", "|---|---:|", f"| wte | {p['wte']:,} |", f"| blocks | {p['blocks']:,} |",
        f"| lm_head | {lm_head} |", f"| total | {p['total']:,} |", "",
        "## Training", "",
        f"- tokens: {tokens}", f"- validation bits per byte: {'unknown' if bpb is None else f'{bpb:.4f}'}",
        (f"- tokenizer: {meta['tokenizer']['name']} (BPE, {config.vocab_size:,} ids, `<|bos|>` starts every "
         f"document), hash `{meta['tokenizer']['hash'][:12]}`"), f"- preset: {run.get('preset') or 'none'}", "",
    ]
    if evals:
        lines += ["## Evaluation", "", "| evaluation | step | metric | value |", "|---|---:|---|---:|", *evals, ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{where}")   # prepends <|bos|>',
              f'model = AutoModelForCausalLM.from_pretrained("{where}")',
              'ids = tok("The capital of France is", return_tensors="pt").input_ids',
              "print(tok.decode(model.generate(ids, max_new_tokens=20)[0]))", "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ export

def check_target(out: Path, force: bool) -> None:
    """Refuse a non-empty DIR (a file, or somebody's work) unless force, and always one that --force would make
    delete tinylab's data: a run or a sweep (DIR itself or anything in it), $TINYLAB_HOME or a folder tinylab
    keeps there (or a DIR inside one), the working directory or this repository. A previous export is none of
    these (run._is_run_dir), so --force replaces it."""
    if out.is_file() or out.is_symlink():
        raise ExportError(f"{out} is a file: give --out a directory path")
    if out.is_dir() and (Run(out).exists() or is_sweep_dir(out)):
        raise ExportError(f"{out} is a tinylab run or sweep: give --out a directory of its own")
    for what, folder in tinylab_folders():
        if out == folder or folder in out.parents:
            raise ExportError(f"{out} {'is' if out == folder else 'lies inside'} {what} ({folder}): give --out a "
                              f"directory of its own, outside tinylab's folders")
    for what, path in (("$TINYLAB_HOME", paths.home()), ("the working directory", Path.cwd()),
                       ("the tinylab repository", paths.REPO)):
        if out == path.resolve() or out in path.resolve().parents:
            raise ExportError(f"{out} holds {what} ({path}): give --out a directory of its own")
    inside = run_or_sweep_in(out)
    if inside is not None:
        raise ExportError(f"{out} holds the tinylab run or sweep {inside}, which --force would delete: give --out a "
                          f"directory of its own")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty: pick another --out, or pass --force to replace it")


def tinylab_folders() -> list[tuple[str, Path]]:
    """(what, resolved path) of each folder that holds tinylab's runs and data: its own under $TINYLAB_HOME
    (paths.MANAGED; an export has no place among runs, shards or tokenizers either), the bundled sample
    corpus (under the default $TINYLAB_HOME) and the repository's published runs and sweeps."""
    found = [(f"$TINYLAB_HOME/{p.name}", p) for p in paths.managed()]
    found += [("the bundled sample corpus", paths.SAMPLE_DIR)]
    found += [(f"the published {prefix.rstrip('/')}", root) for prefix, root in Run.published_roots().items()]
    return [(what, p.resolve()) for what, p in found]


def run_or_sweep_in(out: Path) -> Path | None:
    """The first run or sweep directory inside `out`, walked as shutil.rmtree deletes (links are not followed:
    rmtree removes a link, not what it points to); None if there is none, or no `out`."""
    for top, dirs, _ in os.walk(out):
        dirs.sort()
        if Run(Path(top)).exists() or is_sweep_dir(Path(top)):
            return Path(top)
    return None


@contextmanager
def quiet_transformers():
    """No "Writing model shards" progress bar for a file that takes milliseconds."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@contextmanager
def staging(out: Path, force: bool):
    """A temp dir next to `out` to write into; renamed to `out` at the end, removed on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        check_target(out, force)  # someone may have written DIR meanwhile
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; an export is for sharing
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export(run, out, *, step: int | None = None, dtype: str = "fp32", force: bool = False,
           repo_id: str | None = None) -> Path:
    """Write run `run` (a name or a path) as a transformers NanoChat model + tokenizer + card to `out`.

    repo_id: the Hub repo it will be pushed to, for the model card's usage example.
    """
    from .checkpoint import load_model, locate

    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    out = Path(out).expanduser().resolve()
    check_target(out, force)
    source, ckpt = locate(run, step)
    model, tokenizer, meta = load_model(ckpt)
    run_config = source.read_config() if source.config_path.is_file() else {}
    hf = to_transformers(model, tokenizer, DTYPES[dtype])
    card = model_card(run_config.get("run", source.name), repo_id or str(out), model.config, meta, run_config,
                      run_evaluations(source))
    with staging(out, force) as tmp:
        with quiet_transformers():
            hf.save_pretrained(tmp)
        hf_tokenizer(tokenizer, model.config.sequence_len).save_pretrained(tmp)
        paths.atomic_write(tmp / "README.md", card)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # transformers writes model.safetensors 0600; an export is for sharing
    return out


def push_to_hub(folder, repo_id: str, private: bool | None = None) -> str:
    """Upload an export to the Hugging Face Hub (create_repo + upload_folder); return the repo URL."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise PushError(f"HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it and push the export in "
                        f"{folder} with `hf upload {repo_id} {folder}` (after `hf auth login`)")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="tinylab export")
    except Exception as e:  # noqa: BLE001 - the hub client raises OSError and httpx's errors; all mean "not uploaded"
        if not isinstance(e, OSError) and type(e).__module__.split(".")[0] not in ("httpx", "httpx2", "requests"):
            raise
        raise PushError(f"upload to {repo_id} failed ({type(e).__name__}: {e}). The export in {folder} is "
                        f"complete: check the network and `hf auth login`, then `hf upload {repo_id} {folder}`") from e
    return str(url)


def main(argv=None) -> int:
    from huggingface_hub import constants

    ap = ArgumentParser(prog="python -m tinylab.export", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="run name (under $TINYLAB_HOME/runs) or a run/checkpoint path")
    ap.add_argument("--step", type=int, help="export this checkpoint step (default: the newest)")
    ap.add_argument("--out", required=True, help="directory to write; must be empty or new (see --force)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weight dtype in model.safetensors")
    ap.add_argument("--force", action="store_true",
                    help="replace a non-empty --out (a previous export; never a run, a sweep or tinylab's folders)")
    ap.add_argument("--push-to-hub", metavar="REPO", help="then upload to this Hugging Face repo (user/name)")
    args = ap.parse_args(argv)
    if args.push_to_hub and constants.HF_HUB_OFFLINE:  # say so before the export, not after it
        raise ExportError("--push-to-hub needs the network but HF_HUB_OFFLINE is set: unset it, or export "
                        "without --push-to-hub and upload later with `hf upload REPO DIR`")
    out = export(args.run, args.out, step=args.step, dtype=args.dtype, force=args.force, repo_id=args.push_to_hub)
    print(f"exported {args.run} to {out} (transformers NanoChatForCausalLM, {args.dtype})")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(out, args.push_to_hub)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
