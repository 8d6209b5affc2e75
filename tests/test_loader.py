"""Pre-tokenization and TokenLoader: BOS per document, x/y shift, exact resume, DDP sharding."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tinylab import data, loader
from tinylab.loader import TokenLoader
from tinylab.tokens import LoaderError, pretokenize, token_dir
from tinylab.presets import get_preset


class ByteTokenizer:
    """Stand-in with the tokenizer contract: ids = [BOS] + UTF-8 bytes; BOS never occurs in text."""

    def __init__(self, vocab_size=257):
        self.vocab_size, self.bos_id, self.name = vocab_size, 256, "bytes"
        self.hash = hashlib.sha256(f"bytes-{vocab_size}".encode()).hexdigest()

    def encode(self, text, prepend_bos=False):
        return [self.bos_id] * prepend_bos + list(text.encode())

    def encode_batch(self, texts, prepend_bos=False, num_threads=None):
        return [self.encode(t, prepend_bos) for t in texts]

    def encode_concat(self, texts):
        return np.array([i for t in texts for i in self.encode(t, prepend_bos=True)], dtype=np.uint32)


DOCS = [[f"doc{s}.{j} " + "abc" * (j % 5) for j in range(60)] for s in range(4)]  # 3 train shards + val


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """A 'fineweb' corpus of 4 small shards under a fresh TINYLAB_HOME."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    out = data.corpus_dir("fineweb")
    out.mkdir(parents=True)
    for s, docs in enumerate(DOCS):
        pq.write_table(pa.table({"text": docs}), out / f"shard_{s:05d}.parquet", row_group_size=16)
    return "fineweb"


def stream(split):
    """Independently derived token stream of a split's shards: BOS + bytes per document."""
    shards = DOCS[:-1] if split == "train" else DOCS[-1:]
    return [np.array([t for d in docs for t in [256] + list(d.encode())]) for docs in shards]


def test_pretokenize_bos_per_document_and_idempotent(corpus):
    tok = ByteTokenizer()
    out = pretokenize(corpus, tok, "train", progress=False)
    assert out == token_dir(corpus, tok)
    for s, expected in enumerate(stream("train")):
        got = np.fromfile(out / f"shard_{s:05d}.bin", dtype=np.uint16)
        np.testing.assert_array_equal(got, expected)
        assert (got == 256).sum() == len(DOCS[s])  # one BOS per document
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["train"] == ["shard_00000", "shard_00001", "shard_00002"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    pretokenize(corpus, tok, "train", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")} == mtimes  # nothing redone
    pretokenize(corpus, tok, "val", progress=False)
    assert set(json.loads((out / "meta.json").read_text())["splits"]) == {"train", "val"}


def test_batches_are_shifted_windows_of_the_stream(corpus):
    tok = ByteTokenizer()
    ld = TokenLoader(pretokenize(corpus, tok, "train", progress=False), "train", 3, 16)
    first = stream("train")[0]
    x, y = next(ld)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (3, 16)
    np.testing.assert_array_equal(x.flatten().numpy(), first[:48])
    np.testing.assert_array_equal(y.flatten().numpy(), first[1:49])
    x2, _ = next(ld)
    np.testing.assert_array_equal(x2.flatten().numpy(), first[48:96])  # consecutive, nothing skipped
    assert x[0, 0] == tok.bos_id  # the first document starts with BOS


def test_state_round_trip_gives_identical_next_batch(corpus):
    tokens = pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    ld = TokenLoader(tokens, "train", 2, 32)
    n = ld.batches_per_epoch + 3  # cross an epoch boundary too
    for _ in range(n):
        next(ld)
    state = json.loads(json.dumps(ld.state_dict()))  # what a checkpoint stores
    expected = [next(ld) for _ in range(4)]
    resumed = TokenLoader(tokens, "train", 2, 32, state=state)
    assert resumed.epoch == 1
    for (x, y), (x2, y2) in zip(expected, [next(resumed) for _ in range(4)]):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_a_split_of_empty_documents_is_refused_before_training(corpus):
    """Its tokens would be BOS alone, whose bytes are 0: bits per byte would be 0/0."""
    val = data.list_shards(corpus, "val")[0]
    pq.write_table(pa.table({"text": [""] * 50}), val)
    pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    with pytest.raises(LoaderError, match="'val' split of corpus 'fineweb' .* holds no text"):
        pretokenize(corpus, ByteTokenizer(), "val", progress=False)


def test_mismatched_state_is_refused(corpus):
    tokens = pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    state = TokenLoader(tokens, "train", 2, 32).state_dict()
    with pytest.raises(LoaderError, match="seq_len=32"):
        TokenLoader(tokens, "train", 2, 16, state=state)
    with pytest.raises(LoaderError, match="held .* tokens when this position was saved .* its shards changed"):  # e.g. more shards downloaded since the checkpoint
        TokenLoader(tokens, "train", 2, 32, state={**state, "split_tokens": state["split_tokens"] + 1})


@pytest.mark.parametrize("before, after", [((4, 1), (2, 1)), ((2, 2), (4, 1)), ((3, 1), (1, 3))])
def test_resume_with_another_batch_or_world_size_continues_the_same_stream(corpus, before, after):
    """After an out-of-memory stop a run resumes with a smaller device batch (same tokens per step):
    the state counts rows consumed, so the concatenated batches continue the stream exactly."""
    tokens = pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    (b0, w0), (b1, w1) = before, after

    def rows_of(B, W, state, n):  # n micro-steps of all W ranks, their rows in stream order
        ranks = [TokenLoader(tokens, "train", B, 16, rank=r, world_size=W, state=state) for r in range(W)]
        out = [torch.cat([next(ld)[0] for ld in ranks]) for _ in range(n)]
        return torch.cat(out), ranks[0].state_dict()

    _, state = rows_of(b0, w0, None, 5)
    total = 12 * b0 * w0  # rows the original layout would take next, crossing shard and epoch ends
    want, _ = rows_of(b0, w0, state, total // (b0 * w0))
    got, _ = rows_of(b1, w1, state, total // (b1 * w1))
    assert torch.equal(got, want)


def test_ddp_ranks_are_disjoint_and_cover_everything(corpus):
    tokens = pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    B, T = 2, 16
    ranks = [TokenLoader(tokens, "train", B, T, rank=r, world_size=2, infinite=False) for r in range(2)]
    single = TokenLoader(tokens, "train", B, T, infinite=False)
    seen = [[x.flatten().numpy().tobytes() for x, _ in ld] for ld in ranks]
    assert len(seen[0]) == len(seen[1]) == single.batches_per_epoch // 2  # lockstep
    assert not set(seen[0]) & set(seen[1])
    everything = [x.flatten().numpy().tobytes() for x, _ in single][: 2 * len(seen[0])]
    assert sorted(seen[0] + seen[1]) == sorted(everything)
    # and the single-rank epoch covers every shard but its tail shorter than a row
    assert single.rows_per_epoch == sum((len(s) - 1) // T for s in stream("train"))
    assert single.batches_per_epoch == single.rows_per_epoch // B


def test_vocab_too_big_for_uint16_is_refused(corpus):
    with pytest.raises(LoaderError, match="70,000.*65,536"):
        pretokenize(corpus, ByteTokenizer(vocab_size=70_000), "train", progress=False)


def test_split_too_small_for_a_batch(corpus):
    tokens = pretokenize(corpus, ByteTokenizer(), "val", progress=False)
    with pytest.raises(LoaderError, match="fewer than 1 window"):
        TokenLoader(tokens, "val", 64, 1024)


def test_changed_source_is_retokenized_and_truncated_bin_detected(corpus):
    tok = ByteTokenizer()
    out = pretokenize(corpus, tok, "train", progress=False)
    bin0 = out / "shard_00000.bin"
    bin0.write_bytes(bin0.read_bytes()[:100])  # e.g. a disk-full accident
    with pytest.raises(LoaderError, match="shard_00000.bin has 50 tokens"):
        TokenLoader(out, "train", 2, 16)
    pq.write_table(pa.table({"text": ["new"] * 3}), data.corpus_dir(corpus) / "shard_00000.parquet")
    pretokenize(corpus, tok, "train", progress=False)
    np.testing.assert_array_equal(np.fromfile(bin0, np.uint16), [256, 110, 101, 119] * 3)


def test_a_loader_reads_its_configs_split_while_runs_of_another_num_shards_share_the_tokens(corpus, monkeypatch):
    """meta.json's splits name the split pretokenize was last asked for; a run of another num_shards (a parallel sweep
    point) may ask in between, so a config's loader reads its own shards, not what meta.json says by then."""
    preset, tok = get_preset("smoke").override(corpus=corpus, num_shards=2, sequence_len=16), ByteTokenizer()
    real = loader.pretokenize

    def another_run_meanwhile(*args, **kw):
        out = real(*args, **kw)
        real(corpus, tok, args[2], num_shards=0, progress=False)  # every shard present: validates on shard_00003
        return out

    monkeypatch.setattr(loader, "pretokenize", another_run_meanwhile)
    val = loader.token_batches(preset, tok, "val", batch_size=1, progress=False)
    train = loader.token_batches(preset, tok, "train", batch_size=1, progress=False)
    assert [len(s) for s in val.shards] == [len(stream("train")[1])]  # shard_00001, the second of two
    assert [len(s) for s in train.shards] == [len(stream("train")[0])]
    assert json.loads((token_dir(corpus, tok) / "meta.json").read_text())["splits"]["val"] == ["shard_00003"]


def test_a_source_rewritten_to_the_same_size_is_tokenized_again(corpus):
    tok, src = ByteTokenizer(), data.corpus_dir(corpus) / "shard_00000.parquet"
    plain = dict(compression="none", use_dictionary=False)
    pq.write_table(pa.table({"text": ["abc"] * 3}), src, **plain)
    out = pretokenize(corpus, tok, "train", progress=False)
    size = src.stat().st_size
    pq.write_table(pa.table({"text": ["xyz"] * 3}), src, **plain)
    assert src.stat().st_size == size
    pretokenize(corpus, tok, "train", progress=False)
    np.testing.assert_array_equal(np.fromfile(out / "shard_00000.bin", np.uint16), [256, 120, 121, 122] * 3)


META_DAMAGE = {  # hand edits of a tokens directory's meta.json that are still JSON
    "a list": lambda meta: [1],
    "no shards": lambda meta: {k: v for k, v in meta.items() if k != "shards"},
    "no splits": lambda meta: {k: v for k, v in meta.items() if k != "splits"},
    "no bos_id": lambda meta: {k: v for k, v in meta.items() if k != "bos_id"},
    "shard without tokens": lambda meta: dict(meta, shards={k: {"docs": 1} for k in meta["shards"]}),
    "split a string": lambda meta: dict(meta, splits={"train": "shard_00000"}),
}


@pytest.mark.parametrize("damage", META_DAMAGE)
def test_a_damaged_meta_json_is_tokenized_again_or_refused_saying_what_to_delete(corpus, damage):
    tok = ByteTokenizer()
    out = pretokenize(corpus, tok, "train", progress=False)
    meta_path = out / "meta.json"
    meta_path.write_text(json.dumps(META_DAMAGE[damage](json.loads(meta_path.read_text()))))
    with pytest.raises(LoaderError, match=f"{meta_path} is damaged .* delete {out} to re-tokenize"):
        TokenLoader(out, "train", 2, 16)
    assert pretokenize(corpus, tok, "train", progress=False) == out  # pretokenize makes the tokens again
    ld = TokenLoader(out, "train", 2, 16)
    assert [len(s) for s in ld.shards] == [len(s) for s in stream("train")]


def test_token_batches_and_val_batches_on_the_sample(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    preset = get_preset("smoke").override(eval_tokens=3 * 8 * 128)
    tok = ByteTokenizer()
    train = loader.token_batches(preset, tok, progress=False)
    x, y = next(train)
    assert x.shape == (preset.batch.device_batch_size, preset.model.sequence_len) and x[0, 0] == tok.bos_id
    v1 = [x for x, _ in loader.val_batches(preset, tok, progress=False)]
    v2 = [x for x, _ in loader.val_batches(preset, tok, progress=False)]
    assert len(v1) == 3 and all(torch.equal(a, b) for a, b in zip(v1, v2))


def test_real_tokenizer_if_available(corpus):
    tokenizer = pytest.importorskip("tinylab.tokenizer")
    tok = tokenizer.train_tokenizer(data.iter_texts("sample", "train", max_chars=200_000), vocab_size=300)
    out = pretokenize(corpus, tok, "train", progress=False)
    got = np.fromfile(out / "shard_00000.bin", dtype=np.uint16)
    assert got.tolist() == [t for ids in tok.encode_batch(DOCS[0], prepend_bos=True) for t in ids]


def test_corrupt_source_names_the_file_and_leaves_no_tokens(corpus):
    bad = data.corpus_dir(corpus) / "shard_00001.parquet"
    blob = bytearray(bad.read_bytes())
    col = pq.ParquetFile(bad).metadata.row_group(2).column(0)  # damage a row group, keep the footer
    start = col.dictionary_page_offset or col.data_page_offset
    blob[start + 8: start + col.total_compressed_size] = b"\xff" * (col.total_compressed_size - 8)
    bad.write_bytes(bytes(blob))
    with pytest.raises(data.CorpusError, match="shard_00001.parquet: row group 2"):
        pretokenize(corpus, ByteTokenizer(), "train", progress=False)
    out = token_dir(corpus, ByteTokenizer())
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard_00000.bin"]  # shard 0 kept, no partial


def test_val_pass_pads_a_short_last_batch_and_bpb_ignores_the_padding(monkeypatch, tmp_path):
    """Every batch of a pass has one shape (a second shape would recompile the compiled model); the padded
    rows are ignored targets, so bpb equals that of the same rows read in one batch."""
    from tinylab.evaluate import evaluate_bpb
    from tinylab.model import build_model

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    preset = get_preset("smoke").override(eval_tokens=5 * 128, device_batch_size=2, vocab_size=257)
    tok = ByteTokenizer()
    padded = list(loader.val_batches(preset, tok, progress=False))
    assert [tuple(x.shape) for x, _ in padded] == [(2, 128)] * 3
    assert (padded[-1][1][1] == -1).all() and (padded[-1][1][0] >= 0).all()
    whole = list(loader.val_batches(preset, tok, batch_size=5, progress=False))
    assert len(whole) == 1 and torch.equal(torch.cat([y for _, y in padded])[:5], whole[0][1])
    torch.manual_seed(0)
    model = build_model(preset.model).eval()
    token_bytes = torch.tensor([1] * 256 + [0])  # a byte is one byte, BOS none
    assert evaluate_bpb(model, padded, token_bytes) == pytest.approx(evaluate_bpb(model, whole, token_bytes), rel=1e-6)
    one = list(loader.val_batches(preset.override(eval_tokens=128), tok, progress=False))  # a one-batch pass
    assert [tuple(x.shape) for x, _ in one] == [(1, 128)]                                   # is not padded
