"""Text corpora as parquet shards: the bundled sample and downloaded FineWeb-Edu.

Both use FineWeb-Edu's layout (karpathy/fineweb-edu-100b-shuffle): files named
`shard_NNNNN.parquet` with a `text` column. The last shard of a corpus is validation,
the rest are training, so the same code reads the offline sample and the real data.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from . import paths


class CorpusError(RuntimeError):
    """A corpus that cannot be read; the message names the file and what to do."""


def corpus_dir(corpus: str) -> Path:
    if corpus == "sample":
        return paths.SAMPLE_DIR
    if corpus == "fineweb":
        return paths.home() / "fineweb"
    raise CorpusError(f"unknown corpus {corpus!r}: use 'sample' (bundled) or 'fineweb' (downloaded)")


def list_shards(corpus: str, split: str | None = None) -> list[Path]:
    """Shards of a corpus in order; split='train' drops the last shard, 'val' keeps only it."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    shards = sorted(corpus_dir(corpus).glob("shard_*.parquet"))
    if len(shards) < 2:
        hint = ("run `python -m tinylab.data download -n 15` (or a smaller -n, at least 2)"
                if corpus == "fineweb" else "restore data/sample/ from git")
        raise CorpusError(f"corpus {corpus!r} needs at least 2 shards (train + val) in "
                          f"{corpus_dir(corpus)}, found {len(shards)}: {hint}")
    return {None: shards, "train": shards[:-1], "val": shards[-1:]}[split]


def open_shard(path: Path) -> pq.ParquetFile:
    """Open a parquet shard, turning a truncated or foreign file into a clear error."""
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for corrupt files
        raise CorpusError(f"{path} is not a readable parquet file ({e}); delete it and download it again") from e
    if "text" not in pf.schema_arrow.names:
        raise CorpusError(f"{path} has no 'text' column (columns: {pf.schema_arrow.names})")
    return pf


def iter_texts(corpus: str, split: str = "train", max_chars: int | None = None) -> Iterator[str]:
    """Documents of a corpus split, shard by shard, row group by row group.

    Stops after `max_chars` characters (the last document is cut) when given.
    """
    seen = 0
    for path in list_shards(corpus, split):
        pf = open_shard(path)
        for i in range(pf.num_row_groups):
            try:
                texts = pf.read_row_group(i, columns=["text"]).column("text").to_pylist()
            except Exception as e:
                raise CorpusError(f"{path}: row group {i} is corrupt ({e}); delete the file and download it again") from e
            for text in texts:
                if max_chars is not None and seen + len(text) >= max_chars:
                    yield text[: max_chars - seen]
                    return
                seen += len(text)
                yield text
