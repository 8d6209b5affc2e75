"""The pre-tokenized corpus on disk, this format's one owner: `pretokenize` writes
$TINYLAB_HOME/tokens/<corpus>-<tokenizer.hash[:12]>/shard_NNNNN.bin (raw uint16, one per parquet shard) and
meta.json (token counts, each source's size and parquet footer hash, the shards of each split last asked for);
tinylab.loader reads them.

Free of torch, so that the trainer's data child (tinylab.prepare) starts in a fraction of a second.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import data, paths
from .config import MAX_VOCAB  # ids 0..65535 fit in uint16
from .errors import TinylabError

FORMAT = 1  # meta.json of a tokens directory


class LoaderError(TinylabError, ValueError):
    """Bad tokens directory, tokenizer, batch shape or loader state; the message says what to do."""


def token_dir(corpus: str, tokenizer) -> Path:
    return paths.home() / "tokens" / f"{corpus}-{tokenizer.hash[:12]}"


def read_meta(out: Path) -> dict:
    """meta.json of a tokens directory, {} if there is none; a damaged one (not JSON, or a hand edit that lost its
    fields) is a LoaderError that says what to delete."""
    path = out / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoaderError(f"{path} is corrupt ({e}); delete {out} to re-tokenize") from e
    if not _well_formed(meta):
        raise LoaderError(f"{path} is damaged (it lacks the bos_id, shards or splits pretokenize writes); delete "
                          f"{out} to re-tokenize")
    return meta


def _well_formed(meta) -> bool:
    """Whether meta.json holds what the loader and pretokenize read: bos_id, every shard's token and document counts,
    and each split as a list of shard names."""
    if not (isinstance(meta, dict) and type(meta.get("bos_id")) is int and isinstance(meta.get("shards"), dict)
            and isinstance(meta.get("splits"), dict)):
        return False
    counts = all(isinstance(s, dict) and type(s.get("tokens")) is int and type(s.get("docs")) is int
                 for s in meta["shards"].values())
    return counts and all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in meta["splits"].values())


def tokenize_shard(src: Path, tokenizer, dst: Path, bar: tqdm | None = None) -> tuple[int, int]:
    """Encode one parquet shard into a raw uint16 file; returns (tokens, documents)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writer
    n_tok = n_doc = 0
    try:
        with open(tmp, "wb") as f:
            for texts in data.read_ahead(data.iter_row_groups(src)):
                arr = tokenizer.encode_concat(texts)
                count = len(arr)
                if count and (arr.min() < 0 or arr.max() >= MAX_VOCAB):
                    raise LoaderError(f"{src}: token id {arr.max()} does not fit in uint16")
                f.write(arr.astype(np.uint16).tobytes())
                n_tok, n_doc = n_tok + count, n_doc + len(texts)
                if bar is not None:
                    bar.update(len(texts))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return n_tok, n_doc


def pretokenize(corpus: str, tokenizer, split: str, *, num_shards: int = 0, progress: bool = True) -> Path:
    """Tokenize a corpus split (of `num_shards`, see data.list_shards) once into uint16 shards under
    $TINYLAB_HOME/tokens/; idempotent.

    Returns the tokens directory for TokenLoader. A shard already tokenized from the same source (name, size and
    parquet footer: data.shard_record) is skipped; a damaged meta.json is started afresh (the tokens are made again).
    meta.json's `splits` records the shards of the split last asked for; a loader of a config is given its own
    (token_batches), since runs of another num_shards share this directory.
    """
    if tokenizer.vocab_size > MAX_VOCAB:
        raise LoaderError(f"vocab_size {tokenizer.vocab_size:,} does not fit uint16 token shards "
                          f"(at most {MAX_VOCAB:,}); choose a smaller vocab_size")
    sources = data.list_shards(corpus, split, num_shards)
    out = token_dir(corpus, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    meta = _own_meta(out, corpus, tokenizer)
    todo = [p for p in sources if _stale(out, meta, p)]
    t0 = time.perf_counter()
    docs = sum(data.open_shard(p).metadata.num_rows for p in todo)
    with tqdm(total=docs, desc=f"tokenizing {corpus}/{split}", unit="doc", disable=not progress or not todo) as bar:
        for src in todo:
            record = data.shard_record(src)  # before reading: a source replaced meanwhile is made again next time
            n_tok, n_doc = tokenize_shard(src, tokenizer, out / f"{src.stem}.bin", bar)
            meta["shards"][src.stem] = dict(tokens=n_tok, docs=n_doc, source_bytes=record["bytes"],
                                            source_footer=record["footer"])
            paths.atomic_write(out / "meta.json", json.dumps(meta, indent=1).encode())  # a kill keeps finished shards
    if todo:
        meta["last_tokens_per_s"] = round(sum(meta["shards"][p.stem]["tokens"] for p in todo) /
                                          (time.perf_counter() - t0))
    if todo or meta["splits"].get(split) != [p.stem for p in sources]:
        meta["splits"][split] = [p.stem for p in sources]
        paths.atomic_write(out / "meta.json", json.dumps(meta, indent=1).encode())
    shards = [meta["shards"][p.stem] for p in sources]
    if sum(s["tokens"] for s in shards) <= sum(s["docs"] for s in shards):  # nothing but each document's BOS
        raise LoaderError(f"the {split!r} split of corpus {corpus!r} ({', '.join(p.name for p in sources)}) holds no "
                          f"text (no documents, or only empty ones): write text into its 'text' column")
    return out


def _own_meta(out: Path, corpus: str, tokenizer) -> dict:
    """The tokens directory's meta.json, or a fresh one where there is none or it is damaged (its tokens are derived
    data: made again rather than trusted); one of another tokenizer is refused."""
    try:
        meta = read_meta(out)
    except LoaderError:
        meta = {}
    if meta and meta.get("tokenizer_hash") != tokenizer.hash:
        raise LoaderError(f"{out} holds tokens of tokenizer {meta.get('tokenizer_hash')}, not {tokenizer.hash}; delete it")
    return meta or dict(format=FORMAT, corpus=corpus, tokenizer_hash=tokenizer.hash, vocab_size=tokenizer.vocab_size,
                        bos_id=tokenizer.bos_id, shards={}, splits={})


def _stale(out: Path, meta: dict, src: Path) -> bool:
    """Whether src must be tokenized (again): no tokens of it yet, or its source changed since (size, and parquet
    footer where meta.json recorded one: meta.json from before footers were recorded compares sizes only)."""
    had = meta["shards"].get(src.stem)
    if had is None or not (out / f"{src.stem}.bin").exists():
        return True
    was = dict(name=src.name, bytes=had.get("source_bytes"), footer=had.get("source_footer"))
    return not data.same_shard(was, data.shard_record(src))


def prepare_tokens(cfg, *, progress: bool = True):
    """A run config's tokenizer (tinylab.tokenizer.get_tokenizer: trained if missing) and its corpus' train and val
    splits pre-tokenized with it: all a run reads before its first step. Returns the tokenizer."""
    from .tokenizer import get_tokenizer

    tokenizer = get_tokenizer(cfg, progress=progress)
    for split in ("train", "val"):
        pretokenize(cfg.data.corpus, tokenizer, split, num_shards=cfg.data.num_shards, progress=progress)
    return tokenizer
