"""Byte-level BPE: trained with rustbpe, run with tiktoken, saved without pickle.

Training (rustbpe, Rust + rayon) learns merges over the bytes of regex-split chunks of text;
the runtime (tiktoken) encodes with those ranks, many documents at once on threads. Special
tokens come after the merges, so `vocab_size` (what the model's wte/lm_head see) is exactly
256 bytes + merges + specials.

Split pattern: GPT-4's (cl100k) with one change from nanochat, numbers split into runs of
at most two digits (`\\p{N}{1,2}` instead of `{1,3}`). A 24k vocabulary cannot afford the
~1,100 merges that all 1-3 digit numbers would take; two-digit chunks cost ~110 and still
keep arithmetic-looking text regular. Letters, punctuation, whitespace and contractions
split as in GPT-4, so no token spans a word boundary plus punctuation.

On disk, `$TINYLAB_HOME/tokenizer/<name>/`:
    tokenizer.tiktoken   tiktoken's rank file: `base64(token bytes) rank` per line
    tokenizer.json       pattern, special tokens, vocab size, content hash, training stats (characters read and,
                         for one trained on a corpus, the shards read: checked_shards)
    token_bytes.npy      int32 byte length of every token id (0 for specials), for bits per byte
The hash covers the rank file and the JSON fields that change ids, so a checkpoint that
records it can refuse a different tokenizer with the same name.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tiktoken
from tqdm.auto import tqdm

from . import paths
from .errors import ArgumentParser, TinylabError, cli, positive

SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}|"""
                 r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")
BOS = "<|bos|>"
SPECIAL_TOKENS = (BOS,)  # pretraining only needs a document delimiter
FORMAT = 1
RANKS_FILE, META_FILE, TOKEN_BYTES_FILE = "tokenizer.tiktoken", "tokenizer.json", "token_bytes.npy"


class TokenizerError(TinylabError, ValueError):
    """Bad tokenizer input or a missing / foreign tokenizer; the message says what to do."""


def _content_hash(ranks_blob: bytes, pattern: str, special_tokens: dict[str, int], vocab_size: int) -> str:
    meta = json.dumps({"pattern": pattern, "special_tokens": special_tokens, "vocab_size": vocab_size},
                      sort_keys=True).encode()
    return hashlib.sha256(ranks_blob + b"\0" + meta).hexdigest()


def _ranks_blob(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's .tiktoken format, in rank order (deterministic bytes for the hash)."""
    lines = (base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))
    return b"\n".join(lines) + b"\n"


def _parse_ranks(blob: bytes, path: Path) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(blob.splitlines(), 1):
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"{path}:{n} is not a tiktoken rank line ({e}); retrain the tokenizer") from e
    return ranks


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TokenizerError(f"encode takes str, got {type(text).__name__}; "
                             "decode bytes first, e.g. data.decode('utf-8', errors='replace')")


def _checked(texts: Iterable[str]) -> list[str]:
    texts = list(texts)
    for text in texts:
        _check_text(text)
    return texts


RUNS_PER_THREAD = 4  # encode_concat's units of work: several per thread, so one long run does not hold the rest


def _runs(texts: list[str], count: int) -> list[list[str]]:
    """texts cut into at most `count` contiguous runs of about equal characters."""
    if not texts:
        return []
    ends = np.cumsum([len(t) for t in texts])
    cuts = np.searchsorted(ends, np.linspace(0, ends[-1], count + 1)[1:-1], side="right")
    edges = [0, *sorted(set(cuts.tolist()) - {0, len(texts)}), len(texts)]
    return [texts[a:b] for a, b in zip(edges, edges[1:])]


META_KINDS = {"name": str, "pattern": str, "special_tokens": dict}  # what load builds a Tokenizer from
JSON_KINDS = {str: "a string", dict: "an object"}


def _read_meta(meta_path: Path, directory: Path) -> dict:
    """tokenizer.json, checked for what load needs: a hand edit that is still JSON ([], "stats": "x", special tokens
    as a list) is refused with the file's name and what to delete, not a TypeError from deep inside."""
    def damaged(why: str) -> TokenizerError:
        return TokenizerError(f"{meta_path} is damaged ({why}); delete {directory} and retrain")

    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(repr(e)) from e
    if not isinstance(meta, dict):
        raise damaged(f"it holds {json.dumps(meta)[:40]}, not an object")
    for key, kind in META_KINDS.items():
        if not isinstance(meta.get(key), kind):
            raise damaged(f"{key!r} is {json.dumps(meta.get(key))[:40]}, not {JSON_KINDS[kind]}")
    specials = meta["special_tokens"]
    if BOS not in specials or not all(type(i) is int for i in specials.values()):
        raise damaged(f"special_tokens must map {BOS} and any other special token to an integer id")
    if not isinstance(meta.get("stats") or {}, dict):
        raise damaged(f"'stats' is {json.dumps(meta['stats'])[:40]}, not {JSON_KINDS[dict]}")
    return meta


class Tokenizer:
    """A trained BPE: tiktoken for speed, plus what the model and the evaluator need."""

    def __init__(self, ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN,
                 special_tokens: Iterable[str] = SPECIAL_TOKENS, name: str = "custom", stats: dict | None = None):
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise TokenizerError("token ranks must be exactly 0..N-1; the rank file is corrupt, retrain the tokenizer")
        self.name, self.pattern, self.ranks = name, pattern, ranks
        self.special_tokens = {s: len(ranks) + i for i, s in enumerate(special_tokens)}
        self.vocab_size = len(ranks) + len(self.special_tokens)
        self.bos_id = self.special_tokens[BOS]
        self.stats = dict(stats or {})
        self.enc = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens=self.special_tokens)
        self.token_bytes = np.zeros(self.vocab_size, dtype=np.int32)
        for tok, rank in ranks.items():
            self.token_bytes[rank] = len(tok)
        self.hash = _content_hash(_ranks_blob(ranks), pattern, self.special_tokens, self.vocab_size)

    def __repr__(self):
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    # -- runtime -------------------------------------------------------------------------
    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:
        """Ids of `text`; special-token strings in it are ordinary text (never a control id).

        Lone surrogates (not valid Unicode) become U+FFFD, as in tiktoken.
        """
        _check_text(text)
        ids = self.enc.encode_ordinary(text)
        return [self.bos_id] + ids if prepend_bos else ids

    def encode_batch(self, texts: list[str], prepend_bos: bool = False, num_threads: int | None = None) -> list[list[int]]:
        """Many documents at once on `num_threads` threads (default: all CPUs)."""
        texts = _checked(texts)
        batch = self.enc.encode_ordinary_batch(texts, num_threads=num_threads or os.cpu_count() or 1)
        if prepend_bos:
            for ids in batch:
                ids.insert(0, self.bos_id)
        return batch

    def encode_concat(self, texts: list[str], num_threads: int | None = None) -> np.ndarray:
        """[BOS] + ids of every document, concatenated into one uint32 array: pre-tokenization's form.

        Same ids as encode_batch(prepend_bos=True). Each thread encodes runs of documents, a run joined by the BOS
        string in one tiktoken call: tiktoken encodes the text between two allowed special tokens on its own, so the
        ids are each document's alone, and the GIL is taken once a run, not twice a document. That is tiktoken's
        behaviour rather than its documented contract: test_encode_concat_in_runs_equals_one_call_per_document pins it.
        A tokenizer with other special tokens (one could begin with BOS's text) encodes one document a call."""
        texts = _checked(texts)
        threads = num_threads or os.cpu_count() or 1
        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(self._encode_run, _runs(texts, RUNS_PER_THREAD * threads)))
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)

    def _encode_run(self, texts: list[str]) -> np.ndarray:
        if self.special_tokens.keys() == {BOS} and not any(BOS in t for t in texts):  # a text spelling BOS would split
            try:
                return self.enc.encode_to_numpy("".join(BOS + t for t in texts), allowed_special={BOS},
                                                disallowed_special=())
            except UnicodeEncodeError:  # a lone surrogate: per document, as below
                pass
        bos = np.array([self.bos_id], dtype=np.uint32)
        return np.concatenate([a for t in texts for a in (bos, self._encode_array(t))])

    def _encode_array(self, text: str) -> np.ndarray:
        try:  # no special tokens allowed nor disallowed: special-token strings are ordinary text, as in encode()
            return self.enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary turns them into U+FFFD
            return np.array(self.enc.encode_ordinary(text), dtype=np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})")
        return self.enc.decode(ids)

    def id_to_bytes(self, token_id: int) -> bytes:
        return self.enc.decode_single_token_bytes(token_id)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write rank file, token_bytes and (last, so its presence marks a complete save) the JSON."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths.atomic_write(directory / RANKS_FILE, _ranks_blob(self.ranks))
        npy = io.BytesIO()
        np.save(npy, self.token_bytes, allow_pickle=False)
        paths.atomic_write(directory / TOKEN_BYTES_FILE, npy.getvalue())
        meta = {"format": FORMAT, "name": self.name, "pattern": self.pattern, "special_tokens": self.special_tokens,
                "vocab_size": self.vocab_size, "hash": self.hash, "stats": self.stats}
        paths.atomic_write(directory / META_FILE, json.dumps(meta, indent=2).encode())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        directory = Path(directory)
        meta_path, ranks_path = directory / META_FILE, directory / RANKS_FILE
        if not meta_path.is_file() or not ranks_path.is_file():
            raise TokenizerError(f"no tokenizer in {directory} (needs {META_FILE} and {RANKS_FILE}); train one with "
                                 "`python -m tinylab.tokenizer train --preset <preset>`")
        meta = _read_meta(meta_path, directory)
        ranks = _parse_ranks(ranks_path.read_bytes(), ranks_path)
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise TokenizerError(f"{ranks_path}: token ranks are not exactly 0..N-1 (a partial write or an "
                                 f"edit?); delete {directory} and retrain")
        specials = sorted(meta["special_tokens"], key=meta["special_tokens"].get)
        try:
            tok = cls(ranks, meta["pattern"], specials, meta["name"], meta.get("stats"))
        except ValueError as e:  # tiktoken's: a split pattern that is not a regex
            raise TokenizerError(f"{meta_path} is damaged (its pattern is not a regular expression: "
                                 f"{' '.join(str(e).split())}); delete {directory} and retrain") from e
        if tok.hash != meta.get("hash") or tok.special_tokens != meta["special_tokens"]:
            raise TokenizerError(f"{directory}: files do not match the recorded hash (partial write or edit?); "
                                 "delete the directory and retrain")
        return tok

    def check_hash(self, expected: str, what: str = "this checkpoint") -> None:
        """Refuse to serve a model trained with a different tokenizer."""
        if self.hash != expected:
            raise TokenizerError(f"{what} was trained with tokenizer hash {expected[:12]}, but {self.name} "
                                 f"has {self.hash[:12]}: ids would mean different text. Use the tokenizer "
                                 "the model was trained with (or retrain the model)")


# -- training ------------------------------------------------------------------------------
# rustbpe counts the regex chunks of its text on rayon's global thread pool, which by default has a thread per CPU.
# Past ~8 threads it gets slower while burning more CPU (its threads share the regex's caches), CPU that a
# trainer compiling its kernels alongside needs: on a 16-core Xeon the carried FineWeb sample (203M characters,
# 24,576 ids) trained in 10.4–11.0 s on 16 threads (115–120 CPU-s), 8.6–9.1 s on 8 (46–51), 14.3 s on 4
# (docs/benchmarks.md §3). RAYON_NUM_THREADS, when set, wins; so does a pool that rayon built before.
BPE_THREADS = 8


def _cap_bpe_threads() -> None:
    os.environ.setdefault("RAYON_NUM_THREADS", str(min(BPE_THREADS, os.cpu_count() or 1)))


def _budgeted(texts: Iterable[str], max_chars: int | None, bar: tqdm, seen: list[int]) -> Iterator[str]:
    """Pass documents through, cutting at `max_chars`, rejecting non-text, counting characters."""
    for i, text in enumerate(texts):
        if isinstance(text, (bytes, bytearray)):
            raise TokenizerError(f"document {i} is bytes, not str; decode it first "
                                 "(e.g. .decode('utf-8', errors='replace'))")
        if not isinstance(text, str):
            raise TokenizerError(f"document {i} is a {type(text).__name__}, not str")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise TokenizerError(f"document {i} holds non-UTF-8 data ({e.reason} at character {e.start}); "
                                     "clean it, e.g. s.encode('utf-8', 'replace').decode()") from None
        if max_chars is not None and seen[0] + len(text) > max_chars:
            text = text[: max_chars - seen[0]]
        seen[0] += len(text)
        bar.update(len(text))
        yield text
        if max_chars is not None and seen[0] >= max_chars:
            return


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_chars: int | None = None, *,
                    name: str = "custom", pattern: str = SPLIT_PATTERN, progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE of exactly `vocab_size` ids (256 bytes + merges + specials).

    rustbpe breaks frequency ties deterministically, so the same text gives the same ranks.
    """
    import rustbpe

    _cap_bpe_threads()
    min_vocab = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_vocab:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: it needs at least 256 byte tokens + "
                             f"{len(SPECIAL_TOKENS)} special token(s) = {min_vocab}")
    if max_chars is not None and max_chars <= 0:
        raise TokenizerError(f"max_chars must be positive, got {max_chars}")
    seen = [0]
    t0 = time.perf_counter()
    bpe = rustbpe.Tokenizer()
    with tqdm(total=max_chars, unit="char", unit_scale=True, desc=f"BPE {name}", disable=not progress) as bar:
        bpe.train_from_iterator(_budgeted(texts, max_chars, bar, seen), vocab_size - len(SPECIAL_TOKENS), pattern=pattern)
    seconds = time.perf_counter() - t0
    if seen[0] == 0:
        raise TokenizerError("the corpus is empty: no text to train the tokenizer on (check the corpus / shards)")
    ranks = {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}
    if len(ranks) + len(SPECIAL_TOKENS) != vocab_size:
        raise TokenizerError(f"{seen[0]:,} characters only allow {len(ranks) - 256} merges, but vocab_size "
                             f"{vocab_size} needs {vocab_size - min_vocab}: give more text or a smaller vocab_size")
    stats = {"chars": seen[0], "max_chars": max_chars, "train_seconds": round(seconds, 3),
             "chars_per_s": round(seen[0] / max(seconds, 1e-9))}
    return Tokenizer(ranks, bpe.get_pattern(), SPECIAL_TOKENS, name, stats)


def tokenizer_dir(name: str) -> Path:
    return paths.home() / "tokenizer" / name


def train_corpus_tokenizer(corpus: str, vocab_size: int, max_chars: int | None, *, num_shards: int = 0,
                           progress: bool = True) -> Tokenizer:
    """Train on the training shards of a corpus (of `num_shards`, see data.list_shards) and save to
    TINYLAB_HOME/tokenizer/<corpus>-<vocab_size>/. Its stats record the shards it read (data.shard_record), so that
    a later load can tell whether the corpus still holds them (checked_shards)."""
    from .data import iter_texts, list_shards, shard_record

    # recorded before reading, so a shard replaced meanwhile is refused next time; a missing corpus fails here,
    # before the progress bar opens
    records = {p.name: shard_record(p) for p in list_shards(corpus, "train", num_shards)}
    name, read = f"{corpus}-{vocab_size}", []
    tok = train_tokenizer(iter_texts(corpus, "train", num_shards=num_shards, read=read), vocab_size, max_chars,
                          name=name, progress=progress)
    tok.stats["shards"] = [records.get(p.name) or shard_record(p) for p in read]
    tok.save(tokenizer_dir(name))
    return tok


def checked_max_chars(tok: Tokenizer, max_chars: int, directory: Path) -> Tokenizer:
    """tok, if training on at most max_chars characters would have made it: its own budget, or the whole corpus
    under both budgets. One tokenizer is kept per corpus and vocabulary, so another budget is refused, not ignored."""
    chars, had = tok.stats.get("chars"), tok.stats.get("max_chars")
    if chars is None or had == max_chars or (chars < (had or float("inf")) and chars <= max_chars):
        return tok
    raise TokenizerError(f"{directory} holds a tokenizer trained on {chars:,} characters (tokenizer_max_chars "
                         f"{had if had is None else format(had, ',')}), not on up to {max_chars:,}: pass "
                         f"--max-chars {had or chars} to use it, or delete {directory} to train one on the new budget")


def checked_shards(tok: Tokenizer, corpus: str, num_shards: int, directory: Path) -> Tokenizer:
    """tok, if training it again on the corpus's train split (of num_shards) would read the text it read: the shards
    it recorded (data.shard_record), unchanged and in order, and no more of them when it read the whole split (its
    budget did not stop it). One tokenizer is kept per corpus and vocabulary, so one made from other shards (another
    num_shards, a shard replaced or downloaded since) is refused, not silently reused. A tokenizer saved before
    tokenizers recorded their shards loads unchecked."""
    from .data import list_shards, same_shard, shard_record

    read = tok.stats.get("shards")
    if read is None:
        return tok
    if not isinstance(read, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) and
                                             type(r.get("bytes")) is int for r in read):
        raise TokenizerError(f"{directory / META_FILE} is damaged (stats.shards is not a list of shard records); "
                             f"delete {directory} and retrain")
    now = [shard_record(p) for p in list_shards(corpus, "train", num_shards)]
    whole = tok.stats.get("chars") != tok.stats.get("max_chars")  # its budget did not stop it: it read every shard
    changed = next((i for i, r in enumerate(read) if i >= len(now) or not same_shard(r, now[i])), None)
    if changed is None and not (whole and len(now) > len(read)):
        return tok
    names = f"{read[0]['name']}..{read[-1]['name']}" if len(read) > 1 else read[0]["name"] if read else "none"
    if changed is None or changed >= len(now):  # the same shards, more or fewer of them: another num_shards
        why = (f"it read {'the whole train split, ' if whole else 'the first '}{len(read)} shard(s) ({names}), and "
               f"the train split of num_shards {num_shards} holds {len(now)}")
        fix = f"pass --num-shards {len(read) + 1} to use it (if those shards are here), or delete {directory}"
    else:
        r, n = read[changed], now[changed]
        why = (f"it read {r['name']} where the train split now has {n['name']}" if r["name"] != n["name"] else
               f"{r['name']} had {r['bytes']:,} bytes when it was read and has {n['bytes']:,} now"
               if r["bytes"] != n["bytes"] else f"{r['name']} was rewritten since it was read, to other contents")
        fix = f"put back the shards it read ({names}), or delete {directory}"
    raise TokenizerError(f"{directory} holds a tokenizer trained on other shards of corpus {corpus!r} than this "
                         f"config's ({why}): {fix} to train one on the shards there now")


def get_tokenizer(preset, *, progress: bool = True) -> Tokenizer:
    """The preset's (a TrainConfig's) tokenizer: loaded from TINYLAB_HOME, trained on its corpus if missing. A stored
    one made from another character budget or other shards than the preset's would be is refused, not reused."""
    directory, data = tokenizer_dir(preset.tokenizer_name), preset.data
    if (directory / META_FILE).is_file():
        tok = checked_max_chars(Tokenizer.load(directory), data.tokenizer_max_chars, directory)
        return checked_shards(tok, data.corpus, data.num_shards, directory)
    return train_corpus_tokenizer(data.corpus, preset.model.vocab_size, data.tokenizer_max_chars,
                                  num_shards=data.num_shards, progress=progress)


# -- evaluation ----------------------------------------------------------------------------
class Reference:
    """A tiktoken encoding to compare against, usable only when its files are already cached.

    tiktoken downloads rank files on first use and would block without network, so we look
    in its cache first (same key: sha1 of the URL; same check: sha256 of the content).
    """

    def __init__(self, name: str, files: dict[str, str], build=None):
        self.name, self.files = name, files  # files: url -> expected sha256
        self._build = build or (lambda: tiktoken.get_encoding(name))

    def cached(self) -> bool:
        cache = tiktoken_cache_dir()
        if cache is None:
            return False
        for url, sha256 in self.files.items():
            path = cache / hashlib.sha1(url.encode()).hexdigest()
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
                return False
        return True

    def load(self) -> tiktoken.Encoding:
        return self._build()


_BLOB = "https://openaipublic.blob.core.windows.net/"
REFERENCES = (  # URLs and hashes as in tiktoken_ext/openai_public.py (a test keeps them in sync)
    Reference("gpt2", {
        _BLOB + "gpt-2/encodings/main/vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        _BLOB + "gpt-2/encodings/main/encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"}),
    Reference("cl100k_base", {
        _BLOB + "encodings/cl100k_base.tiktoken": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"}),
)


def tiktoken_cache_dir() -> Path | None:
    """Where tiktoken caches downloads (its own rule from tiktoken/load.py); None if disabled."""
    import tempfile
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache is None:
        return Path(tempfile.gettempdir()) / "data-gym-cache"
    return Path(cache) if cache else None


def load_references(references=REFERENCES, log=print) -> list[tiktoken.Encoding]:
    """The cached reference encodings; one line through `log` for each one skipped."""
    encodings = []
    for ref in references:
        if not ref.cached():
            log(f"{ref.name} not cached (needs a download): skipped")
            continue
        try:
            encodings.append(ref.load())
        except Exception as e:  # a damaged cache must not stop an evaluation
            log(f"{ref.name} failed to load from the cache ({e}): skipped")
    return encodings


def eval_texts(preset, max_chars: int = 1_000_000) -> list[str]:
    """Held-out text: the validation shard of the preset's corpus (never seen in training)."""
    from .data import iter_texts
    return list(iter_texts(preset.data.corpus, "val", max_chars=max_chars, num_shards=preset.data.num_shards))


def bytes_per_token(enc: tiktoken.Encoding, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8", "replace")) for t in texts)
    n_tokens = sum(map(len, enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)))
    return n_bytes / max(n_tokens, 1)


def compression_table(tok: Tokenizer, texts: list[str], references=REFERENCES, log=print):
    """bytes/token of this tokenizer and the cached references on `texts` (higher = better)."""
    import pandas as pd
    rows = [(tok.name, tok.vocab_size, bytes_per_token(tok.enc, texts))]
    rows += [(enc.name, enc.n_vocab, bytes_per_token(enc, texts)) for enc in load_references(references, log)]
    df = pd.DataFrame(rows, columns=["tokenizer", "vocab_size", "bytes_per_token"])
    df["tokens_vs_ours"] = df.bytes_per_token.iloc[0] / df.bytes_per_token  # <1: fewer tokens than ours
    return df


def compression_by_vocab(tok: Tokenizer, texts: list[str], vocab_sizes: Iterable[int]):
    """bytes/token as the vocabulary grows, from one training run.

    BPE training is greedy, so a tokenizer trained to a smaller vocabulary has exactly the
    first merges of a larger one: truncating the ranks replays it without retraining.
    """
    import pandas as pd
    rows = []
    for v in sorted(vocab_sizes):
        n = v - len(tok.special_tokens)
        if not 256 <= n <= len(tok.ranks):
            raise TokenizerError(f"vocab size {v} is outside 256+specials..{tok.vocab_size} for {tok.name}")
        sub = {b: r for b, r in tok.ranks.items() if r < n}
        enc = tiktoken.Encoding(f"{tok.name}[:{v}]", pat_str=tok.pattern, mergeable_ranks=sub, special_tokens={})
        rows.append((v, bytes_per_token(enc, texts)))
    return pd.DataFrame(rows, columns=["vocab_size", "bytes_per_token"])


def encode_throughput(tok: Tokenizer, texts: list[str], num_threads: int | None = None) -> float:
    """Tokens per second of encode_batch over `texts` (best of 3)."""
    best, n_tokens = float("inf"), 0
    for _ in range(3):
        t0 = time.perf_counter()
        n_tokens = sum(map(len, tok.encode_batch(texts, num_threads=num_threads)))
        best = min(best, time.perf_counter() - t0)
    return n_tokens / best


# -- CLI -----------------------------------------------------------------------------------
TRAIN_KNOBS = ("corpus", "vocab_size", "num_shards", "tokenizer_max_chars")
EVAL_KNOBS = ("corpus", "vocab_size", "num_shards")  # its --max-chars is the held-out text's


def main(argv=None) -> int:
    from .config import GROUPS, add_knob_arguments, knob_arguments
    from .presets import resolve

    ap = ArgumentParser(prog="python -m tinylab.tokenizer", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a BPE and save it under $TINYLAB_HOME/tokenizer/<name>/")
    ev = sub.add_parser("eval", help="compression (bytes/token) on held-out text, vs GPT-2 / cl100k if cached")
    for p in (tr, ev):
        p.add_argument("--preset", help="preset name (default: $TINYLAB_PRESET or ittybitty)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    add_knob_arguments(tr, GROUPS, only=TRAIN_KNOBS)
    add_knob_arguments(ev, GROUPS, only=EVAL_KNOBS)
    tr.add_argument("--force", action="store_true", help="retrain even if the tokenizer exists")
    ev.add_argument("--max-chars", type=positive(int, "max chars"), default=1_000_000,
                    help="held-out characters to evaluate on")
    args = ap.parse_args(argv)
    from .presets import preset_from_env
    preset = resolve(args.preset or preset_from_env().name, knob_arguments(args))
    if args.cmd == "eval":
        tok, texts = get_tokenizer(preset, progress=not args.no_progress), eval_texts(preset, args.max_chars)
        print(compression_table(tok, texts).to_string(index=False, float_format="%.3f"))
        print(f"encode_batch: {encode_throughput(tok, texts):,.0f} tokens/s on {os.cpu_count() or 1} threads")
        return 0
    directory = tokenizer_dir(preset.tokenizer_name)
    if (directory / META_FILE).is_file() and not args.force:
        try:
            print(f"{directory} exists (hash {Tokenizer.load(directory).hash[:12]}); --force retrains")
            return 0
        except TokenizerError as e:  # damaged: replaced, as the load's own error advises (`train --preset ...`)
            print(f"{directory} holds a tokenizer that cannot be loaded ({str(e).split('; ')[0]}): training a new one")
    tok = train_corpus_tokenizer(preset.data.corpus, preset.model.vocab_size, preset.data.tokenizer_max_chars,
                                 num_shards=preset.data.num_shards, progress=not args.no_progress)
    print(f"trained {tok} on {tok.stats['chars']:,} chars in {tok.stats['train_seconds']:.1f} s "
          f"({tok.stats['chars_per_s']:,.0f} chars/s) -> {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
