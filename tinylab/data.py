"""Text corpora as parquet shards: the bundled sample and downloaded FineWeb-Edu.

Both use FineWeb-Edu's layout (karpathy/fineweb-edu-100b-shuffle): files named
`shard_NNNNN.parquet` with a `text` column, so the same code reads the offline sample and the real data.
A run uses the first `num_shards` shards in name order (0: every shard present); the last of those is
validation, the rest are training. Naming them, rather than taking whatever is there, keeps a run's
validation shard where it was when more shards are downloaded.

    python -m tinylab.data download -n 15 [--workers 4]      # or: download_shards(15) in a notebook
    python -m tinylab.data info [sample|fineweb] [-n NUM_SHARDS]
"""
from __future__ import annotations

import atexit
import hashlib
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm.auto import tqdm

from . import paths
from .download import DownloadError, fetch, offline, require_online
from .errors import ArgumentParser, TinylabError, cli

if TYPE_CHECKING:
    import pyarrow.parquet as pq

REPO_ID = "karpathy/fineweb-edu-100b-shuffle"
MAX_SHARD = 1822  # the dataset's last shard index (shard_01822.parquet)
READ_AHEAD = 2  # row groups read_ahead queues before they are asked for (~1k documents each; one more may wait)
Item = TypeVar("Item")


class CorpusError(TinylabError):
    """A corpus that cannot be read; the message names the file and what to do."""


def corpus_dir(corpus: str) -> Path:
    if corpus == "sample":
        return paths.SAMPLE_DIR
    if corpus == "fineweb":
        return paths.home() / "fineweb"
    raise CorpusError(f"unknown corpus {corpus!r}: use 'sample' (bundled) or 'fineweb' (downloaded)")


def list_shards(corpus: str, split: str | None = None, num_shards: int = 0) -> list[Path]:
    """The shards a run of `num_shards` uses, in name order: the first num_shards, or every one present for 0.
    The last of them is validation: split='train' drops it, 'val' keeps only it."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 0 or num_shards == 1:
        raise CorpusError(f"num_shards must be 0 (every shard present) or at least 2 (train + val), got {num_shards!r}")
    shards = sorted(corpus_dir(corpus).glob("shard_*.parquet"))
    if len(shards) < max(num_shards, 2):
        raise CorpusError(_too_few(corpus, len(shards), num_shards))
    shards = shards[:num_shards] if num_shards else shards
    return {None: shards, "train": shards[:-1], "val": shards[-1:]}[split]


def _too_few(corpus: str, found: int, num_shards: int) -> str:
    """Why a corpus with `found` shards cannot serve num_shards, and what to run."""
    where = f"{found} shard(s) in {corpus_dir(corpus)}"
    restore = "restore data/sample/ from git"
    if not num_shards:
        hint = ("run `python -m tinylab.data download -n 15` (or a smaller -n, at least 2)" if corpus == "fineweb"
                else restore)
        return f"corpus {corpus!r} needs at least 2 shards (train + val), found {where}: {hint}"
    if corpus == "fineweb":
        hint = f"run `python -m tinylab.data download -n {num_shards}`" + (
            f", or pass --num-shards {found} to use the ones there (0: every shard present)" if found >= 2 else "")
    else:
        hint = f"pass --num-shards {found} or 0 (every shard present)" if found >= 2 else restore
    return (f"num_shards is {num_shards} (the first {num_shards} shards, the last for validation), but corpus "
            f"{corpus!r} has {where}: {hint}")


def shard_record(path: Path) -> dict:
    """What identifies a shard's contents, cheaply: its name, its size and a hash of its parquet footer (the file's
    metadata: row groups, their compressed sizes and offsets, min/max statistics), which tells apart nearly every
    rewrite of the same size (not one of an uncompressed shard whose documents are too long for statistics: hashing
    whole shards would cost seconds a run). Read without pyarrow (the trainer's process never imports it); `footer`
    is None for a file that is not parquet, which reading it reports."""
    size = path.stat().st_size
    footer = None
    with open(path, "rb") as f:
        if size >= 12:
            f.seek(size - 8)
            tail = f.read(8)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] == b"PAR1" and length <= size - 12:
                f.seek(size - 8 - length)
                footer = hashlib.sha256(f.read(length)).hexdigest()[:16]
    return dict(name=path.name, bytes=size, footer=footer)


def same_shard(a: dict, b: dict) -> bool:
    """Two shard_records of the same contents (a record without a footer compares by name and size)."""
    return (a.get("name"), a.get("bytes")) == (b.get("name"), b.get("bytes")) and \
        (a.get("footer") is None or b.get("footer") is None or a["footer"] == b["footer"])


def open_shard(path: Path) -> pq.ParquetFile:
    """Open a parquet shard, turning a truncated or foreign file into a clear error."""
    import pyarrow as pa  # here, not at the top: the trainer imports this module but reads no parquet itself
    import pyarrow.parquet as pq  # (its data child does), and pyarrow's import is 0.1-1.4 s

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for corrupt files
        raise CorpusError(f"{path} is not a readable parquet file ({' '.join(str(e).split())}); delete it and "
                          f"download it again") from e
    if "text" not in pf.schema_arrow.names:
        raise CorpusError(f"{path} has no 'text' column (columns: {pf.schema_arrow.names}): write the documents "
                          f"into a 'text' column, or delete it and download it again")
    kind = pf.schema_arrow.field("text").type
    if pa.types.is_dictionary(kind):  # what pandas writes for a category column: read back as its strings
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise CorpusError(f"{path}: the 'text' column holds {kind}, not strings; write the documents as text")
    return pf


class ReadStopped(TinylabError):
    """Raised in a thread whose reading was stopped (tinylab.train's data thread, when training failed)."""


_reader = threading.local()  # this thread's stop signal, looked at once per row group


@contextmanager
def stoppable(stop: threading.Event):
    """Reading shards in this thread raises ReadStopped at the next row group once `stop` is set, so the
    tokenizer training or pre-tokenization it feeds ends promptly, each cleaning up after itself."""
    _reader.stop = stop
    try:
        yield
    finally:
        _reader.stop = None


def stop_requested() -> bool:
    """Whether this thread's reading was asked to stop (see stoppable)."""
    stop = getattr(_reader, "stop", None)
    return stop is not None and stop.is_set()


def iter_row_groups(path: Path) -> Iterator[list[str]]:
    """The documents of one shard, a row group (~1k documents) at a time."""
    pf = open_shard(path)
    for i in range(pf.num_row_groups):
        if stop_requested():
            raise ReadStopped(f"reading {path} was stopped")
        try:
            texts = pf.read_row_group(i, columns=["text"]).column("text").to_pylist()
        except Exception as e:
            raise CorpusError(f"{path}: row group {i} is corrupt ({' '.join(str(e).split())}); delete the file and "
                              f"download it again") from e
        if any(t is None for t in texts):
            raise CorpusError(f"{path}: row group {i} has null texts; delete the file and download it again")
        yield texts


def read_ahead(items: Iterator[Item], depth: int = READ_AHEAD) -> Iterator[Item]:
    """`items`, produced on a thread of their own up to `depth` ahead: the next row group is read and decoded (pyarrow
    releases the GIL) while the caller's native code (BPE training, encoding) works on this one. An exception reaches
    the caller in its place in the stream; the caller's stop signal (stoppable) is the reader's too, and is looked at
    before each item; closing the generator stops the reader and waits for it."""
    if depth < 1:
        raise ValueError(f"read_ahead's depth must be at least 1, got {depth}")
    stop, done, ready = getattr(_reader, "stop", None), threading.Event(), queue.Queue(depth)

    def put(entry) -> bool:
        while not done.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        with stoppable(stop) if stop is not None else nullcontext():
            try:
                for item in items:
                    if not put((True, item)):
                        return
                put((False, None))
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                put((False, e))

    reader = done, threading.Thread(target=produce, name="tinylab-read-ahead", daemon=True)
    _readers.add(reader)
    reader[1].start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            if stop is not None and stop.is_set():
                raise ReadStopped("reading was stopped")
            yield item
    finally:
        _end_reader(reader)


_readers: set = set()  # (done, thread) of every read_ahead not yet ended


def _end_reader(reader: tuple[threading.Event, threading.Thread], timeout: float | None = None) -> None:
    """Stop a reader and wait for it. It must not outlive the interpreter: a daemon thread still inside pyarrow
    when Python shuts down aborts the process (its thread exit unwinds pyarrow's C++ frames)."""
    done, thread = reader
    done.set()
    if thread is not threading.current_thread() and not sys.is_finalizing():
        thread.join(timeout)
    _readers.discard(reader)


atexit.register(lambda: [_end_reader(r, timeout=5.0) for r in list(_readers)])  # readers nobody closed


def iter_texts(corpus: str, split: str = "train", max_chars: int | None = None, *, num_shards: int = 0,
               read: list[Path] | None = None) -> Iterator[str]:
    """Documents of a corpus split (of `num_shards`, see list_shards), shard by shard, row group by row group (read
    ahead on a thread).

    Stops after `max_chars` characters (the last document is cut) when given. `read`, when given, is kept the first
    shards of the split up to the one the last document handed out came from (all of them once the split is
    exhausted): a consumer that stops early knows which shards its text came from (the tokenizer records them).
    """
    shards, seen = list_shards(corpus, split, num_shards), 0
    row_groups = ((i, texts) for i, path in enumerate(shards) for texts in iter_row_groups(path))
    for i, texts in read_ahead(row_groups):
        for text in texts:
            if read is not None and len(read) <= i:
                read.extend(shards[len(read):i + 1])  # empty shards before this one were read too
            if max_chars is not None and seen + len(text) >= max_chars:
                yield text[: max_chars - seen]
                return
            seen += len(text)
            yield text
    if read is not None:
        read.extend(shards[len(read):])


def info(corpus: str, num_shards: int = 0) -> list[dict]:
    """One row per shard present: name, split of a run of `num_shards` (train, val, or unused), size on disk,
    documents (from the parquet footer)."""
    used = list_shards(corpus, num_shards=num_shards)
    split = {p: "train" for p in used[:-1]} | {used[-1]: "val"}
    return [dict(shard=p.name, split=split.get(p, "unused"), mb=round(p.stat().st_size / 1e6, 1),
                 docs=open_shard(p).metadata.num_rows) for p in list_shards(corpus)]


# ---------------------------------------------------------------- FineWeb-Edu download

def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


HUB = "the Hugging Face Hub"
OFFLINE_HINT = ("Or train offline on the bundled sample with a preset whose corpus is 'sample' "
                "(e.g. TINYLAB_PRESET=smoke).")


def download_shard(index: int, out_dir: Path, *, endpoint: str | None = None, retries: int = 5,
                   backoff: float = 2.0, bar: tqdm | None = None, stop: threading.Event | None = None) -> Path:
    """Fetch one FineWeb-Edu shard into out_dir with tinylab.download.fetch (resumable, atomic, parquet-checked)."""
    from huggingface_hub import hf_hub_url

    name = shard_name(index)
    return fetch(hf_hub_url(REPO_ID, name, repo_type="dataset", endpoint=endpoint), Path(out_dir) / name,
                 validate=open_shard, source=HUB, retries=retries, backoff=backoff, bar=bar, offline_hint=OFFLINE_HINT,
                 not_found=f"{name} does not exist in {REPO_ID} (valid shards: 0..{MAX_SHARD})", stop=stop)


def download_shards(num_shards: int = 15, *, out_dir: Path | None = None, workers: int = 4,
                    endpoint: str | None = None, retries: int = 5, backoff: float = 2.0,
                    progress: bool = True) -> list[Path]:
    """Download shards 0..num_shards-1 (the last is validation); returns their paths, in order.

    Idempotent: finished shards are skipped, partial ones resumed. Stops at the first shard
    that fails for good (the others keep their progress) with one DownloadError. On that error or
    Ctrl-C, shards not started are never fetched and those under way stop at their next chunk,
    keeping their .part files for the next call to resume.
    """
    if not isinstance(num_shards, int) or not 2 <= num_shards <= MAX_SHARD + 1:
        raise DownloadError(f"num_shards must be between 2 (train + val) and {MAX_SHARD + 1}, got {num_shards}")
    if not isinstance(workers, int) or workers < 1:
        raise DownloadError(f"workers must be a positive integer, got {workers}")
    out_dir = Path(out_dir) if out_dir is not None else corpus_dir("fineweb")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not all((out_dir / shard_name(i)).exists() for i in range(num_shards)):
        require_online(HUB, "FineWeb-Edu shards", OFFLINE_HINT)
    if offline():  # all there and nothing can be fetched: check them without a progress bar (one line if one fails)
        return [download_shard(i, out_dir) for i in range(num_shards)]
    done: dict[int, Path] = {}
    stop = threading.Event()
    with tqdm(total=0, unit="B", unit_scale=True, desc=f"FineWeb-Edu ×{num_shards}", disable=not progress) as bar:
        # not `with ThreadPoolExecutor`: its exit waits for every queued shard, so Ctrl-C would download them all
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {pool.submit(download_shard, i, out_dir, endpoint=endpoint, retries=retries, backoff=backoff,
                                   bar=bar, stop=stop): i for i in range(num_shards)}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
        finally:  # cancel the queued shards first: a worker freed by the stop must find nothing left to start
            pool.shutdown(wait=False, cancel_futures=True)
            stop.set()
    return [done[i] for i in range(num_shards)]


def prepare_corpus(preset, *, progress: bool = True) -> str:
    """Make the preset's corpus available (a notebook cell): download its FineWeb-Edu shards if any are
    missing, with a progress bar. Returns one line saying what is there, or why it could not be fetched
    and what to run instead; a notebook user gets that line rather than a traceback."""
    corpus, num_shards = preset.data.corpus, preset.data.num_shards
    if corpus == "sample" or not num_shards:  # nothing to fetch: the bundled sample, or every shard already here
        try:
            used = list_shards(corpus, num_shards=num_shards)
        except CorpusError as e:
            return str(e)
        where = "bundled" if corpus == "sample" else "present"
        return (f"corpus {corpus!r}: {len(used)} shards {where} in {corpus_dir(corpus)}; the last one "
                f"({used[-1].name}) is validation")
    try:
        found = download_shards(num_shards, progress=progress)
    except DownloadError as e:
        return (f"FineWeb-Edu is not available: {e} Once online, run "
                f"`python -m tinylab.data download -n {preset.data.num_shards}` or this cell again.")
    size = sum(p.stat().st_size for p in found) / 1e9
    return f"corpus 'fineweb': {len(found)} shards ({size:.2f} GB) in {found[0].parent}; the last one is validation"


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m tinylab.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download", help="download FineWeb-Edu shards into $TINYLAB_HOME/fineweb/")
    dl.add_argument("-n", "--num-shards", type=int, default=15, help="shards 0..n-1; the last is validation")
    dl.add_argument("--workers", type=int, default=4, help="parallel downloads")
    inf = sub.add_parser("info", help="list a corpus's shards")
    inf.add_argument("corpus", nargs="?", default="fineweb", choices=["sample", "fineweb"])
    inf.add_argument("-n", "--num-shards", type=int, default=0,
                     help="label the splits of a run of this num_shards (default 0: every shard present)")
    args = ap.parse_args(argv)
    if args.cmd == "download":
        found = download_shards(args.num_shards, workers=args.workers)
        total = sum(p.stat().st_size for p in found)
        print(f"{len(found)} shards ({total / 1e9:.2f} GB) in {found[0].parent}; last one is validation")
        return 0
    rows = info(args.corpus, args.num_shards)
    for r in rows:
        print(f"{r['shard']:<22}{r['split']:<7}{r['mb']:>9.1f} MB{r['docs']:>10,} docs")
    print(f"{len(rows)} shards in {corpus_dir(args.corpus)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
