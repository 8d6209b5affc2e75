"""Download FineWeb-Edu parquet shards (karpathy/fineweb-edu-100b-shuffle) into $TINYLAB_HOME/fineweb/.

    python -m tinylab.data download -n 15 [--workers 4]      # or: download_shards(15) in a notebook

Why not plain `hf_hub_download`: since huggingface_hub 1.x it streams into a process-unique
temporary file and deletes it on failure, so a killed or failed 250 MB shard restarts from zero.
We keep huggingface_hub for everything that talks to the Hub (resolve URL, HEAD metadata with
its ETag/size, the streaming GET with `Range` resume on dropped connections, size consistency
check) and own only the file handling: bytes go to `shard_NNNNN.parquet.<etag>.part`, which a
later call resumes from with a Range request; a finished part must have the announced size and
open as parquet before `os.replace` gives it its real name. A killed download therefore never
leaves a file that looks complete, and the next call continues where it stopped.
Failures are retried with exponential backoff; shards download in parallel threads.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from .data import CorpusError, open_shard

REPO_ID = "karpathy/fineweb-edu-100b-shuffle"
MAX_SHARD = 1822  # the dataset's last shard index (shard_01822.parquet)


class DownloadError(RuntimeError):
    """A download that cannot complete; the message says why and what to do."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of whichever HTTP stack huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod in ("httpx2", "httpx"):
        try:
            m = __import__(mod)
            errors += [m.ConnectError, m.TimeoutException]
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _offline_message(err: BaseException) -> str:
    return ("cannot reach the Hugging Face Hub to download FineWeb-Edu shards "
            f"({type(err).__name__}: {err}). Check your network connection (and HF_ENDPOINT / "
            "HF_HUB_OFFLINE), or train offline on the bundled sample with a preset whose corpus is "
            "'sample' (e.g. TINYLAB_PRESET=smoke).")


def download_shard(index: int, out_dir: Path, *, endpoint: str | None = None, retries: int = 5,
                   backoff: float = 2.0, bar: tqdm | None = None) -> Path:
    """Fetch one shard into out_dir (resuming a .part file), validate it, rename it atomically."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled
    from huggingface_hub.file_download import http_get

    name = shard_name(index)
    dest = out_dir / name
    if dest.exists():
        try:
            open_shard(dest)
            return dest
        except CorpusError:  # a foreign/corrupt file under the final name: fetch it again
            dest.unlink()
    if constants.HF_HUB_OFFLINE:
        raise DownloadError(_offline_message(OfflineModeIsEnabled("HF_HUB_OFFLINE is set")))
    url = hf_hub_url(REPO_ID, name, repo_type="dataset", endpoint=endpoint)
    network = _network_errors()
    for attempt in range(retries):
        counted = 0  # what this attempt added to the shared progress bar, undone if it fails
        try:
            meta = get_hf_file_metadata(url)
            size, etag = meta.size, (meta.etag or "noetag").strip('"')[:16]
            part = out_dir / f"{name}.{etag}.part"
            for stale in out_dir.glob(f"{name}.*.part"):  # partials of another file version
                if stale != part:
                    stale.unlink()
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have > size:
                part.unlink()
                have = 0
            if bar is not None and size is not None:
                bar.total = (bar.total or 0) + size
                bar.update(have)
                counted = size
            with open(part, "ab") as f:
                http_get(meta.location or url, f, resume_size=have, expected_size=size,
                         displayed_filename=name, _tqdm_bar=bar)
            try:
                open_shard(part)
            except CorpusError as e:  # complete size but not parquet: start this shard over
                part.unlink()
                raise OSError(f"{name} downloaded but is not valid parquet: {e}") from e
            os.replace(part, dest)
            return dest
        except EntryNotFoundError as e:
            raise DownloadError(f"{name} does not exist in {REPO_ID} (valid shards: 0..{MAX_SHARD})") from e
        except Exception as e:
            if bar is not None and counted:
                bar.total -= counted
                bar.update(-(part.stat().st_size if part.exists() else 0))
            if isinstance(e, DownloadError):
                raise
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise DownloadError(f"{name}: the Hub refused the download (HTTP {status}: {e})") from e
            if attempt == retries - 1:
                if isinstance(e, network + (OfflineModeIsEnabled,)):
                    raise DownloadError(_offline_message(e)) from e
                raise DownloadError(f"{name}: download failed after {retries} attempts ({type(e).__name__}: "
                                    f"{e}); run the command again to resume") from e
            time.sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def download_shards(num_shards: int = 15, *, out_dir: Path | None = None, workers: int = 4,
                    endpoint: str | None = None, retries: int = 5, backoff: float = 2.0,
                    progress: bool = True) -> list[Path]:
    """Download shards 0..num_shards-1 (the last is validation); returns their paths, in order.

    Idempotent: finished shards are skipped, partial ones resumed. Stops at the first shard
    that fails for good (the others keep their progress) with one DownloadError.
    """
    from .data import corpus_dir

    if not 2 <= num_shards <= MAX_SHARD + 1:
        raise DownloadError(f"num_shards must be between 2 (train + val) and {MAX_SHARD + 1}, got {num_shards}")
    out_dir = Path(out_dir) if out_dir is not None else corpus_dir("fineweb")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[int, Path] = {}
    with tqdm(total=0, unit="B", unit_scale=True, desc=f"FineWeb-Edu ×{num_shards}", disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(download_shard, i, out_dir, endpoint=endpoint, retries=retries,
                               backoff=backoff, bar=bar): i for i in range(num_shards)}
        for fut in as_completed(futures):
            try:
                paths[futures[fut]] = fut.result()
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
    return [paths[i] for i in range(num_shards)]

