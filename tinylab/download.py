"""Resumable, atomic, checked downloads of one file: FineWeb-Edu shards, the CORE eval bundle.

    fetch(url, dest, validate=..., sha256=..., offline_hint="...")

Why not plain `hf_hub_download`: since huggingface_hub 1.x it streams into a process-unique
temporary file and deletes it on failure, so a killed or failed 250 MB download restarts from
zero. We keep huggingface_hub's HTTP layer (HEAD metadata with ETag and size, the streaming GET
with `Range` resume on dropped connections, the size check) and own only the file handling:
bytes go to `<dest>.<etag>.part`, which a later call resumes from with a Range request; a
finished part must have the announced size, the pinned SHA-256 (if given) and pass `validate`
before `os.replace` gives it its real name. A killed download therefore never leaves a file
that looks complete, and the next call continues where it stopped. A file already under the real
name that fails those checks (damaged, or a user's own file) is never deleted up front: only that
`os.replace` of a checked replacement removes it, so a download that cannot happen loses nothing.
Failures are retried with exponential backoff; a `stop` event set by the caller (Ctrl-C in a pool
of downloads) ends a transfer at its next chunk, keeping its part file. This module knows nothing
about what it downloads.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .errors import TinylabError


class DownloadError(TinylabError):
    """A download that cannot complete; the message says why and what to do."""


class DownloadStopped(DownloadError):
    """The caller's stop event was set; the part file is kept for the next call to resume."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def offline_message(source: str, name: str, reason: str, hint: str = "") -> str:
    return (f"cannot reach {source} to download {name} ({reason}). Check your network connection "
            f"(and HF_ENDPOINT / HF_HUB_OFFLINE). {hint}").strip()


def offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE): nothing can be downloaded."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def require_online(source: str, name: str, hint: str = "") -> None:
    """Raise the offline DownloadError now if huggingface_hub is in offline mode (before any progress bar)."""
    if offline():
        raise DownloadError(offline_message(source, name, "HF_HUB_OFFLINE is set", hint))


def _problem(path: Path, sha256: str | None, validate: Callable[[Path], None] | None) -> str | None:
    """What is wrong with a file already under its final name, naming it (validate's messages do); None if it passes
    the checks of a fresh download."""
    try:
        if sha256 is not None and (got := sha256_of(path)) != sha256:
            return f"{path} has SHA-256 {got[:16]}…, not the pinned {sha256[:16]}…"
        if validate is not None:
            validate(path)
        return None
    except TinylabError as e:
        return str(e)
    except OSError as e:
        return f"{path} cannot be read ({type(e).__name__}: {e})"


class _Stoppable:
    """The part file as http_get writes it, refusing the next chunk once `stop` is set (the rest is the file's)."""

    def __init__(self, f, stop: threading.Event, name: str):
        self._f, self._stop, self._name = f, stop, name

    def write(self, chunk: bytes) -> int:
        _stop_here(self._stop, self._name)
        return self._f.write(chunk)

    def __getattr__(self, attr):
        return getattr(self._f, attr)


def _stop_here(stop: threading.Event | None, name: str) -> None:
    if stop is not None and stop.is_set():
        raise DownloadStopped(f"{name}: the download was stopped; run the command again to resume it")


def _check(part: Path, name: str, sha256: str | None, validate) -> None:
    """A complete part file must match the pin and pass validate; a mismatch is final, not retried."""
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"{name} downloaded completely but its SHA-256 is {got[:16]}…, not the pinned "
                                f"{sha256[:16]}…: the file at the source has changed. tinylab will not compute a "
                                f"silently different number from it; update tinylab or report this")
    if validate is not None:
        try:
            validate(part)
        except TinylabError as e:  # complete size but not what we expect: start this file over
            part.unlink()
            raise OSError(f"{name} downloaded but {e}") from e


def _attempt(url: str, dest: Path, name: str, sha256, validate, bar, stop) -> int:
    """One try: HEAD, resume the part file with Range, check, rename. Returns the bytes counted on `bar`."""
    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.file_download import http_get

    # the user's Hugging Face token goes to the Hub only, never to another server (e.g. the CORE bundle's S3)
    on_hub = url.startswith(constants.ENDPOINT) or url.startswith("https://huggingface.co/")
    meta = get_hf_file_metadata(url, token=None if on_hub else False)
    size, etag = meta.size, (meta.etag or "noetag").strip('"')[:16]
    part = dest.with_name(f"{dest.name}.{etag}.part")
    for stale in dest.parent.glob(f"{dest.name}.*.part"):  # partials of another version of the file
        if stale != part:
            stale.unlink()
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    counted = 0
    if bar is not None and size is not None:
        bar.total = (bar.total or 0) + size
        bar.update(have)
        counted = size
    try:
        with open(part, "ab") as f:
            http_get(meta.location or url, f if stop is None else _Stoppable(f, stop, name), resume_size=have,
                     expected_size=size, displayed_filename=name, _tqdm_bar=bar)
        _check(part, name, sha256, validate)
    except BaseException:
        if bar is not None and counted:
            bar.total -= counted
            bar.update(-(part.stat().st_size if part.exists() else 0))
        raise
    os.replace(part, dest)  # replaces a file that failed its checks only now, with one that passed them
    return counted


def fetch(url: str, dest: str | Path, *, sha256: str | None = None, validate: Callable[[Path], None] | None = None,
          source: str | None = None, offline_hint: str = "", not_found: str | None = None, retries: int = 5,
          backoff: float = 2.0, bar: tqdm | None = None, stop: threading.Event | None = None) -> Path:
    """Download url to dest (resuming a .part file), check it, rename it atomically; return dest.

    A file already at dest that passes the checks is kept (no request is made); one that fails them stays
    until a checked replacement takes its name. `validate(path)` raises a TinylabError for a file that is not
    what it should be; `sha256` pins the exact bytes. `source` names the server in messages (default: the
    URL's host); `offline_hint` ends the message when the network cannot be reached; `not_found` replaces the
    message for an HTTP 404. Transient failures are retried `retries` times with backoff. Once `stop` is set,
    the download ends at its next chunk (or backoff) with DownloadStopped, keeping its .part file.
    """
    dest = Path(dest)
    problem = _problem(dest, sha256, validate) if dest.exists() else None
    if dest.exists() and problem is None:
        return dest
    try:
        return _download(url, dest, sha256=sha256, validate=validate, source=source, offline_hint=offline_hint,
                         not_found=not_found, retries=retries, backoff=backoff, bar=bar, stop=stop)
    except DownloadStopped:
        raise
    except DownloadError as e:
        if problem is None:
            raise
        # say both: the file there is not usable as it is, and it was not touched (it may be the user's own)
        raise DownloadError(f"{problem.rstrip('.')}. That existing file failed validation and is kept as it is: only "
                            f"a download that passes validation replaces it (move it elsewhere first if it is yours), "
                            f"and none could be made: {e}") from e


def _download(url: str, dest: Path, *, sha256, validate, source, offline_hint, not_found, retries, backoff, bar,
              stop) -> Path:
    """fetch's network part: the offline check, then `retries` attempts with exponential backoff."""
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled

    name = dest.name
    _stop_here(stop, name)  # a download queued before the stop never starts
    source = source or (url.split("/")[2] if "//" in url else url)
    require_online(source, name, offline_hint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    network = _network_errors() + (OfflineModeIsEnabled,)
    for attempt in range(retries):
        try:
            _attempt(url, dest, name, sha256, validate, bar, stop)
            return dest
        except DownloadError:
            raise
        except EntryNotFoundError as e:
            raise DownloadError(not_found or f"{name} does not exist at {url}") from e
        except Exception as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 404:
                raise DownloadError(not_found or f"{name} does not exist at {url}") from e
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise DownloadError(f"{name}: the server refused the download (HTTP {status}: {e})") from e
            if attempt == retries - 1:
                if isinstance(e, network):
                    raise DownloadError(offline_message(source, name, f"{type(e).__name__}: {e}", offline_hint)) from e
                raise DownloadError(f"{name}: download failed after {retries} attempts ({type(e).__name__}: "
                                    f"{e}); run the command again to resume") from e
            _pause(backoff * 2 ** attempt, stop, name)
    raise AssertionError("unreachable")


def _pause(seconds: float, stop: threading.Event | None, name: str) -> None:
    """The backoff between attempts, cut short by the stop event (a backoff can be a minute long)."""
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        _stop_here(stop, name)
