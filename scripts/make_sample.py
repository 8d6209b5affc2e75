"""Rebuild the bundled sample corpus in data/sample/ from Debian's python3.11-doc package.

The sample is real English prose (the reStructuredText sources of the Python 3.11
documentation, PSF licence) cut into web-page-sized documents and written in the same
layout as the FineWeb-Edu shards: parquet files `shard_NNNNN.parquet` with one `text`
column, the last shard being validation. Run once by a maintainer; users never need it:

    apt-get download python3.11-doc && dpkg -x python3.11-doc_*.deb /tmp/pydoc
    python scripts/make_sample.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources
"""
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MAX_DOC_CHARS = 6000   # FineWeb-Edu pages are a few KB; cut long files at paragraph breaks
N_TRAIN_SHARDS = 3
VAL_FRACTION = 0.05


def pack(paragraphs, max_chars: int = MAX_DOC_CHARS):
    """Join consecutive paragraphs into documents of at most max_chars (a longer paragraph stays whole)."""
    doc, size = [], 0
    for para in paragraphs:
        if size + len(para) > max_chars and doc:
            yield "\n\n".join(doc).strip()
            doc, size = [], 0
        doc.append(para)
        size += len(para) + 2
    if doc:
        yield "\n\n".join(doc).strip()


def documents(path: Path):
    return pack(path.read_text(encoding="utf-8").split("\n\n"))


def main(src: str, out: str = "data/sample") -> None:
    files = sorted(Path(src).rglob("*.rst.txt"))
    docs = [d for f in files for d in documents(f) if len(d) >= 200]
    random.Random(0).shuffle(docs)
    n_val = int(len(docs) * VAL_FRACTION)
    val, train = docs[:n_val], docs[n_val:]
    shards = [train[i::N_TRAIN_SHARDS] for i in range(N_TRAIN_SHARDS)] + [val]
    Path(out).mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        table = pa.table({"text": shard})
        pq.write_table(table, f"{out}/shard_{i:05d}.parquet", row_group_size=1024, compression="zstd")
        print(f"shard_{i:05d}.parquet: {len(shard):,} docs, {sum(map(len, shard)):,} chars")


if __name__ == "__main__":
    main(*sys.argv[1:])
