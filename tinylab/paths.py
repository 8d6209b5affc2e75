"""Where tinylab reads and writes: one artifacts directory, TINYLAB_HOME.

Default: the repository's own data/ folder (next to the bundled sample), so a user sees
every artifact in the tree they cloned; outside a checkout, ~/.cache/tinylab. Layout:

    $TINYLAB_HOME/tokenizer/<name>/   trained tokenizers
    $TINYLAB_HOME/fineweb/            downloaded FineWeb-Edu parquet shards
    $TINYLAB_HOME/tokens/<name>/      pre-tokenized uint16 token shards
    $TINYLAB_HOME/runs/<run>/         checkpoints, config.json, metrics.jsonl
    $TINYLAB_HOME/notebooks/          executed copies of the notebooks (the main job)
    $TINYLAB_HOME/eval_bundle/        the CORE eval bundle, unpacked from eval_bundle.zip there
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
# what tinylab keeps under TINYLAB_HOME (the layout above): the one list of it, so that `export --force`
# can refuse to replace any of it (tests/test_design.py checks that every home() / NAME in the package is)
MANAGED = ("tokenizer", "fineweb", "tokens", "runs", "notebooks", "eval_bundle", "eval_bundle.zip")


def home() -> Path:
    env = os.environ.get("TINYLAB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if SAMPLE_DIR.is_dir():
        return REPO / "data"
    return Path.home() / ".cache" / "tinylab"


def subdir(*parts: str) -> Path:
    """A directory under TINYLAB_HOME, created on first use."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def managed() -> list[Path]:
    """The folders (and the bundle's zip) that tinylab keeps under TINYLAB_HOME, whether they exist yet or not."""
    return [home() / name for name in MANAGED]


def runs_dir() -> Path:
    return subdir("runs")


def atomic_write(path, data: bytes | str) -> Path:
    """Write a file so a reader (or a crash) sees the old content or the new, never half of it.

    A temp file in the same directory (same filesystem, so os.replace is atomic), fsync'ed before
    the rename; mode 0o644 like a plain open() would give (mkstemp makes it 0o600). str is UTF-8.
    """
    path = Path(path)
    blob = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
