"""The pre-tokenized corpus on disk, this format's one owner: `pretokenize` writes
$TINYLAB_HOME/tokens/<corpus>-<tokenizer.hash[:12]>/shard_NNNNN.bin (raw uint16, one per parquet shard) and
meta.json (token counts, source sizes, which shards form each split); tinylab.loader reads them.

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
    try:
        return json.loads((out / "meta.json").read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoaderError(f"{out / 'meta.json'} is corrupt ({e}); delete {out} to re-tokenize") from e


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


def pretokenize(corpus: str, tokenizer, split: str, *, progress: bool = True) -> Path:
    """Tokenize a corpus split once into uint16 shards under $TINYLAB_HOME/tokens/; idempotent.

    Returns the tokens directory for TokenLoader. Shards already tokenized from a source of the
    same size are skipped.
    """
    if tokenizer.vocab_size > MAX_VOCAB:
        raise LoaderError(f"vocab_size {tokenizer.vocab_size:,} does not fit uint16 token shards "
                          f"(at most {MAX_VOCAB:,}); choose a smaller vocab_size")
    sources = data.list_shards(corpus, split)
    out = token_dir(corpus, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_meta(out)
    if meta and meta.get("tokenizer_hash") != tokenizer.hash:
        raise LoaderError(f"{out} holds tokens of tokenizer {meta.get('tokenizer_hash')}, not {tokenizer.hash}; delete it")
    meta = meta or dict(format=FORMAT, corpus=corpus, tokenizer_hash=tokenizer.hash,
                        vocab_size=tokenizer.vocab_size, bos_id=tokenizer.bos_id, shards={}, splits={})
    todo = [p for p in sources if not ((out / f"{p.stem}.bin").exists() and
                                        meta["shards"].get(p.stem, {}).get("source_bytes") == p.stat().st_size)]
    t0 = time.perf_counter()
    docs = sum(data.open_shard(p).metadata.num_rows for p in todo)
    with tqdm(total=docs, desc=f"tokenizing {corpus}/{split}", unit="doc", disable=not progress or not todo) as bar:
        for src in todo:
            n_tok, n_doc = tokenize_shard(src, tokenizer, out / f"{src.stem}.bin", bar)
            meta["shards"][src.stem] = dict(tokens=n_tok, docs=n_doc, source_bytes=src.stat().st_size)
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


def prepare_tokens(cfg, *, progress: bool = True):
    """A run config's tokenizer (tinylab.tokenizer.get_tokenizer: trained if missing) and its corpus' train and val
    splits pre-tokenized with it: all a run reads before its first step. Returns the tokenizer."""
    from .tokenizer import get_tokenizer

    tokenizer = get_tokenizer(cfg, progress=progress)
    for split in ("train", "val"):
        pretokenize(cfg.data.corpus, tokenizer, split, progress=progress)
    return tokenizer
