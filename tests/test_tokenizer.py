"""Tokenizer: training, round trips, persistence, bad input, evaluation (all offline)."""
import base64
import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from hypothesis import given, settings, strategies as st
from tiktoken.load import load_tiktoken_bpe

from tinylab import tokenizer as T
from tinylab.data import iter_texts
from tinylab.errors import cli
from tinylab.presets import get_preset
from tinylab.widgets.tokens import render_tokens, token_pieces

VOCAB = 400


@pytest.fixture(scope="module")
def texts():
    return list(iter_texts("sample", "train", max_chars=300_000))


@pytest.fixture(scope="module")
def tok(texts):
    return T.train_tokenizer(texts, VOCAB, name="t400", progress=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


# -- core ----------------------------------------------------------------------------------
def test_vocab_layout(tok):
    assert tok.vocab_size == VOCAB and len(tok.token_bytes) == VOCAB
    assert tok.bos_id == VOCAB - 1 and tok.token_bytes[tok.bos_id] == 0
    assert tok.token_bytes.dtype == np.int32 and (tok.token_bytes[:256] == 1).all()
    assert tok.enc.n_vocab == VOCAB


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_roundtrip_arbitrary_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.bos_id for i in ids)  # special-token text is never a control id
    # token_bytes is exactly each token's raw byte length (what bits-per-byte divides by)
    assert int(tok.token_bytes[ids].sum()) == len(text.encode("utf-8"))


def test_batch_matches_single_and_bos(tok):
    docs = ["Hello world!", "", "日本語 text <|bos|> 12345", "a\n\n  b"]
    batch = tok.encode_batch(docs, prepend_bos=True, num_threads=2)
    assert batch == [[tok.bos_id] + tok.encode(d) for d in docs]
    assert tok.encode(docs[0], prepend_bos=True)[0] == tok.bos_id
    assert tok.decode(batch[2][1:]) == docs[2]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(), max_size=6))
def test_encode_concat_equals_the_flattened_batch(tok, docs):
    """Pre-tokenization's array path: the same ids, special-token strings as text, lone surrogates as U+FFFD."""
    docs = docs + ["<|bos|> spelled out", "a\udcffb", ""]
    got = tok.encode_concat(docs, num_threads=2)
    assert got.dtype == np.uint32
    assert got.tolist() == [i for ids in tok.encode_batch(docs, prepend_bos=True) for i in ids]
    assert tok.encode_concat([]).tolist() == []


# pieces that meet the BOS string where runs join documents: its prefixes, suffixes, other brackets, whitespace
EDGES = ["<|bos|>", "<|bos|", "<|bos", "<|", "<", "|>", "s|>", ">", "bos", " ", "\n", "  \n", "é", "😀", "a\udcffb",
         "x", "12", "'s", ""]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(EDGES), max_size=5).map("".join), max_size=12), st.integers(1, 4))
def test_encode_concat_in_runs_equals_one_call_per_document(tok, docs, threads):
    """Runs of documents joined by the BOS string give each document's ids alone, whatever meets at the joins."""
    per_document = [i for d in docs for i in [tok.bos_id] + tok._encode_array(d).tolist()]
    assert tok.encode_concat(docs, num_threads=threads).tolist() == per_document


def test_encode_concat_with_more_special_tokens_still_encodes_each_document_alone(tok):
    """A special token that begins with BOS's text would swallow a join: such a tokenizer encodes per document."""
    wider = T.Tokenizer(tok.ranks, special_tokens=(T.BOS, T.BOS + "x"))
    docs = ["x", "xa", "", "b"]
    assert wider.encode_concat(docs, num_threads=1).tolist() == [
        i for d in docs for i in [wider.bos_id] + wider._encode_array(d).tolist()]


@given(st.lists(st.integers(0, 50), max_size=30), st.integers(1, 9))
def test_runs_keep_every_document_in_order(lengths, count):
    docs = ["x" * n for n in lengths]
    runs = T._runs(docs, count)
    assert [d for run in runs for d in run] == docs and all(runs) and len(runs) <= count


def test_numbers_split_in_pairs(tok):
    pieces = [tok.decode([i]) for i in tok.encode("2024 12345")]
    assert max(len(p.strip()) for p in pieces if p.strip().isdigit()) <= 2


def test_training_is_deterministic_and_greedy(texts, tok):
    again = T.train_tokenizer(texts, VOCAB, progress=False)
    assert again.ranks == tok.ranks and again.hash == tok.hash
    small = T.train_tokenizer(texts, 300, progress=False)  # what compression_by_vocab relies on
    assert small.ranks == {b: r for b, r in tok.ranks.items() if r < 299}


def test_max_chars_budget(texts):
    small = T.train_tokenizer(texts, 300, max_chars=50_000, progress=False)
    assert small.stats["chars"] == 50_000


def test_save_load_identical(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))  # tiktoken caches even local files
    tok.save(tmp_path / "t")
    back = T.Tokenizer.load(tmp_path / "t")
    sample = "The quick brown fox — 42 jumps; ünïcödé 🦊\n"
    assert back.encode(sample, prepend_bos=True) == tok.encode(sample, prepend_bos=True)
    assert back.hash == tok.hash and back.ranks == tok.ranks and back.name == "t400"
    assert np.array_equal(np.load(tmp_path / "t" / T.TOKEN_BYTES_FILE, allow_pickle=False), tok.token_bytes)
    # the rank file is tiktoken's own format
    assert load_tiktoken_bpe(str(tmp_path / "t" / T.RANKS_FILE)) == tok.ranks
    assert not list((tmp_path / "t").glob("*.tmp*"))


def test_hash_guards(tok, tmp_path):
    tok.save(tmp_path / "t")
    tok.check_hash(tok.hash)
    with pytest.raises(T.TokenizerError, match="trained with tokenizer hash"):
        tok.check_hash("0" * 64)
    ranks = (tmp_path / "t" / T.RANKS_FILE).read_bytes().splitlines()
    ranks[300], ranks[301] = ranks[301].split()[0] + b" 300", ranks[300].split()[0] + b" 301"  # swap two merges
    (tmp_path / "t" / T.RANKS_FILE).write_bytes(b"\n".join(ranks) + b"\n")
    with pytest.raises(T.TokenizerError, match="recorded hash"):
        T.Tokenizer.load(tmp_path / "t")


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("docs, vocab, match", [
    ([], 300, "corpus is empty"),
    (["", ""], 300, "corpus is empty"),
    (["hello"], 256, "too small"),
    ([b"bytes"], 300, "is bytes"),
    (["ok", "bad \udcff surrogate"], 300, "document 1 holds non-UTF-8"),
    (["hello world"] * 3, 400, "only allow"),
])
def test_training_bad_input(docs, vocab, match):
    with pytest.raises(T.TokenizerError, match=match):
        T.train_tokenizer(iter(docs), vocab, progress=False)


def test_runtime_bad_input(tok, tmp_path):
    with pytest.raises(T.TokenizerError, match="takes str"):
        tok.encode(b"abc")
    with pytest.raises(T.TokenizerError, match="takes str"):
        tok.encode_batch(["ok", b"abc"])
    assert tok.decode(tok.encode("a\udcffb")) == "a\ufffdb"  # lone surrogate: replaced, as tiktoken does
    with pytest.raises(T.TokenizerError, match="outside"):
        tok.decode([VOCAB])
    with pytest.raises(T.TokenizerError, match="no tokenizer in .*train one"):
        T.Tokenizer.load(tmp_path / "missing")


# -- get_tokenizer -------------------------------------------------------------------------
def test_get_tokenizer_trains_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    smoke = get_preset("smoke")
    tok = T.get_tokenizer(smoke, progress=False)
    assert tok.vocab_size == smoke.model.vocab_size and tok.name == smoke.tokenizer_name
    assert (tmp_path / "tokenizer" / smoke.tokenizer_name / T.META_FILE).is_file()
    monkeypatch.setattr(T, "train_tokenizer", lambda *a, **k: pytest.fail("retrained"))
    assert T.get_tokenizer(smoke).hash == tok.hash


def test_a_stored_tokenizer_of_another_character_budget_is_refused_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    smoke = get_preset("smoke")  # 2,000,000 characters of a train split that holds more
    tok = T.get_tokenizer(smoke, progress=False)
    assert tok.stats["chars"] == smoke.data.tokenizer_max_chars
    monkeypatch.setattr(T, "train_tokenizer", lambda *a, **k: pytest.fail("retrained"))
    with pytest.raises(T.TokenizerError, match="not on up to 20,000: pass --max-chars 2000000"):
        T.get_tokenizer(smoke.override(tokenizer_max_chars=20_000))
    with pytest.raises(T.TokenizerError, match="not on up to 3,000,000"):
        T.get_tokenizer(smoke.override(tokenizer_max_chars=3_000_000))


def test_a_tokenizer_that_read_the_whole_corpus_serves_every_larger_budget(tok, texts, tmp_path):
    whole = sum(map(len, texts))  # `tok` read all of `texts`: no budget cut it
    assert tok.stats["chars"] == whole and tok.stats["max_chars"] is None
    for budget in (whole, whole + 1, 10 ** 12):
        assert T.checked_max_chars(tok, budget, tmp_path) is tok
    with pytest.raises(T.TokenizerError, match=f"trained on {whole:,} characters"):
        T.checked_max_chars(tok, whole - 1, tmp_path)


def fineweb(tmp_path, monkeypatch, count: int) -> Path:
    """A 'fineweb' corpus of `count` shards of sample text (~140k characters each) under a fresh TINYLAB_HOME."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinylab import data

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    out = data.corpus_dir("fineweb")
    out.mkdir(parents=True)
    texts = list(iter_texts("sample", "train", max_chars=140_000 * count))
    for i in range(count):
        pq.write_table(pa.table({"text": texts[i::count]}), out / data.shard_name(i))
    return out


def test_a_tokenizer_of_other_shards_is_refused_not_reused(tmp_path, monkeypatch):
    """It records the train shards it read; another num_shards, a shard downloaded since (num_shards 0) or a shard
    replaced is refused with what to pass or delete, where the tokenizer used to be reused silently."""
    import shutil

    out = fineweb(tmp_path, monkeypatch, 3)
    cfg = get_preset("smoke").override(corpus="fineweb", num_shards=2, vocab_size=300)  # its budget reads it all
    tok = T.get_tokenizer(cfg, progress=False)
    assert [r["name"] for r in tok.stats["shards"]] == ["shard_00000.parquet"]
    assert tok.stats["shards"][0]["bytes"] == (out / "shard_00000.parquet").stat().st_size
    monkeypatch.setattr(T, "train_tokenizer", lambda *a, **k: pytest.fail("retrained"))
    assert T.get_tokenizer(cfg).hash == tok.hash  # the same shards: reused
    for n in (3, 0):
        with pytest.raises(T.TokenizerError, match=r"trained on other shards .* the whole train split, 1 shard\(s\) "
                                                   r"\(shard_00000.parquet\).* holds 2\): pass --num-shards 2 to use it"):
            T.get_tokenizer(cfg.override(num_shards=n))
    shutil.copy(out / "shard_00000.parquet", tmp_path / "kept.parquet")
    shutil.copy(out / "shard_00002.parquet", out / "shard_00000.parquet")  # replaced, another size
    with pytest.raises(T.TokenizerError, match="shard_00000.parquet had .* bytes when it was read and has .* now\\): "
                                               "put back the shards it read .*, or delete"):
        T.get_tokenizer(cfg)
    shutil.copy(tmp_path / "kept.parquet", out / "shard_00000.parquet")  # put back: reused again
    assert T.get_tokenizer(cfg).hash == tok.hash


def test_a_tokenizer_stopped_by_its_budget_serves_every_split_that_starts_with_its_shards(tmp_path, monkeypatch):
    """Training again on a longer split would read the same characters; a shorter one or a changed shard would not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = fineweb(tmp_path, monkeypatch, 4) / "shard_00001.parquet"
    texts = [t[:1000] for t in pq.read_table(path).column("text").to_pylist()]  # short enough for min/max statistics
    pq.write_table(pa.table({"text": texts}), path, compression="none", use_dictionary=False)
    first = sum(map(len, pq.read_table(path.with_name("shard_00000.parquet")).column("text").to_pylist()))
    budget = first + sum(map(len, texts)) // 2  # stops in shard_00001
    cfg = get_preset("smoke").override(corpus="fineweb", num_shards=3, vocab_size=300, tokenizer_max_chars=budget)
    tok = T.get_tokenizer(cfg, progress=False)
    assert [r["name"] for r in tok.stats["shards"]] == ["shard_00000.parquet", "shard_00001.parquet"]
    monkeypatch.setattr(T, "train_tokenizer", lambda *a, **k: pytest.fail("retrained"))
    assert T.get_tokenizer(cfg.override(num_shards=0)).hash == tok.hash
    with pytest.raises(T.TokenizerError, match=r"the first 2 shard\(s\) .* num_shards 2 holds 1\): pass --num-shards 3"):
        T.get_tokenizer(cfg.override(num_shards=2))
    size = path.stat().st_size
    pq.write_table(pa.table({"text": [t.swapcase() for t in texts]}), path, compression="none", use_dictionary=False)
    assert path.stat().st_size == size  # the same size, other text: only its footer (the statistics) tells
    with pytest.raises(T.TokenizerError, match="shard_00001.parquet was rewritten since it was read, to other "
                                               "contents\\): put back"):
        T.get_tokenizer(cfg)


def test_a_tokenizer_saved_without_its_shards_loads_unchecked(tmp_path, monkeypatch):
    """Tokenizers trained before they recorded their shards keep working (stats are outside the content hash)."""
    fineweb(tmp_path, monkeypatch, 3)
    cfg = get_preset("smoke").override(corpus="fineweb", num_shards=2, vocab_size=300)
    tok = T.get_tokenizer(cfg, progress=False)
    meta_path = tmp_path / "tokenizer" / "fineweb-300" / T.META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["stats"]["shards"]
    meta_path.write_text(json.dumps(meta))
    assert T.get_tokenizer(cfg.override(num_shards=3)).hash == tok.hash


DAMAGED_META = {  # hand edits of tokenizer.json that are still JSON
    "a list": lambda meta: [],
    "stats a string": lambda meta: dict(meta, stats="x"),
    "specials a list": lambda meta: dict(meta, special_tokens=list(meta["special_tokens"])),
    "specials without bos": lambda meta: dict(meta, special_tokens={"<|x|>": 299}),
    "special id a string": lambda meta: dict(meta, special_tokens={T.BOS: "299"}),
    "pattern not a regex": lambda meta: dict(meta, pattern="(("),
    "pattern a number": lambda meta: dict(meta, pattern=5),
    "no name": lambda meta: {k: v for k, v in meta.items() if k != "name"},
    "shards not a list": lambda meta: dict(meta, stats=dict(meta["stats"], shards="shard_00000")),
}


@pytest.mark.parametrize("damage", DAMAGED_META)
def test_a_damaged_tokenizer_json_is_one_clear_error_saying_what_to_delete(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    smoke = get_preset("smoke").override(vocab_size=300, tokenizer_max_chars=100_000)
    T.get_tokenizer(smoke, progress=False)
    directory = tmp_path / "tokenizer" / "sample-300"
    meta_path = directory / T.META_FILE
    meta_path.write_text(json.dumps(DAMAGED_META[damage](json.loads(meta_path.read_text()))))
    with pytest.raises(T.TokenizerError, match=f"{meta_path}.* is damaged .*delete {directory}"):
        T.get_tokenizer(smoke)


def test_the_advice_for_a_tokenizer_that_cannot_load_works(tmp_path, monkeypatch, capsys):
    """Its error says to run `python -m tinylab.tokenizer train`, which used to load it again and fail the same way."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    argv = ["--preset", "smoke", "--vocab-size", "300", "--max-chars", "100000", "--no-progress"]
    smoke = get_preset("smoke").override(vocab_size=300, tokenizer_max_chars=100_000)
    tok = T.get_tokenizer(smoke, progress=False)
    directory = tmp_path / "tokenizer" / "sample-300"
    (directory / T.RANKS_FILE).unlink()
    with pytest.raises(T.TokenizerError, match="python -m tinylab.tokenizer train --preset"):
        T.get_tokenizer(smoke)
    assert cli(T.main, ["train", *argv]) == 0
    assert "cannot be loaded" in capsys.readouterr().out
    assert T.get_tokenizer(smoke).hash == tok.hash  # the same text gives the same tokenizer
    (directory / T.META_FILE).write_text("[]")
    assert cli(T.main, ["train", *argv]) == 0 and T.get_tokenizer(smoke).hash == tok.hash
    assert cli(T.main, ["train", *argv]) == 0 and "exists" in capsys.readouterr().out  # a sound one is kept


# -- evaluation ----------------------------------------------------------------------------
def test_references_in_sync_with_tiktoken():
    source = (Path(tiktoken.__file__).parents[1] / "tiktoken_ext" / "openai_public.py").read_text()
    for ref in T.REFERENCES:
        for url, sha in ref.files.items():
            assert url in source and sha in source


def test_references_uncached_are_skipped(tok, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    lines = []
    df = T.compression_table(tok, ["some held-out text"], log=lines.append)
    assert lines == ["gpt2 not cached (needs a download): skipped",
                     "cl100k_base not cached (needs a download): skipped"]
    assert list(df.tokenizer) == ["t400"]


def _bytes_reference(cache: Path, blob: bytes) -> T.Reference:
    """A 256-token (bytes only) tiktoken encoding, placed where tiktoken's cache looks."""
    url = "https://example.invalid/bytes.tiktoken"
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(blob)
    sha = hashlib.sha256(b"".join(base64.b64encode(bytes([i])) + f" {i}\n".encode() for i in range(256))).hexdigest()
    return T.Reference("bytes", {url: sha}, build=lambda: tiktoken.Encoding(
        "bytes", pat_str=T.SPLIT_PATTERN, mergeable_ranks=load_tiktoken_bpe(url, sha), special_tokens={}))


def test_references_cached_are_compared(tok, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    blob = b"".join(base64.b64encode(bytes([i])) + f" {i}\n".encode() for i in range(256))
    good = _bytes_reference(tmp_path, blob)
    text = ["héllo wörld, a held-out sentence"]
    df = T.compression_table(tok, text, references=[good], log=pytest.fail)
    assert list(df.tokenizer) == ["t400", "bytes"]
    assert df.bytes_per_token.iloc[1] == 1.0  # one token per byte, by construction
    assert df.bytes_per_token.iloc[0] == len(text[0].encode()) / len(tok.encode(text[0]))
    damaged = _bytes_reference(tmp_path, blob[:-10])  # wrong hash: treated as not cached, no download
    lines = []
    assert len(T.compression_table(tok, text, references=[damaged], log=lines.append)) == 1
    assert lines == ["bytes not cached (needs a download): skipped"]


def test_compression_by_vocab_matches_trained(texts, tok):
    held_out = list(iter_texts("sample", "val", max_chars=20_000))
    df = T.compression_by_vocab(tok, held_out, [300, VOCAB])
    small = T.train_tokenizer(texts, 300, progress=False)
    assert df.bytes_per_token.iloc[0] == pytest.approx(T.bytes_per_token(small.enc, held_out))
    assert df.bytes_per_token.iloc[1] == pytest.approx(T.bytes_per_token(tok.enc, held_out))
    assert df.bytes_per_token.is_monotonic_increasing
    with pytest.raises(T.TokenizerError, match="outside"):
        T.compression_by_vocab(tok, held_out, [VOCAB + 1])


def test_cli(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    assert cli(T.main, ["train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cli(T.main, ["train", "--preset", "smoke", "--corpus", "fineweb"]) == 2
    assert "tinylab.data download" in capsys.readouterr().err
    assert T.main(["train", "--preset", "smoke", "--vocab-size", "300", "--max-chars", "100000"]) == 0
    out = capsys.readouterr().out
    assert "sample-300" in out and (tmp_path / "tokenizer" / "sample-300" / T.META_FILE).is_file()
    meta = json.loads((tmp_path / "tokenizer" / "sample-300" / T.META_FILE).read_text())
    assert meta["vocab_size"] == 300 and meta["stats"]["chars"] == 100_000
    assert T.main(["eval", "--preset", "smoke", "--max-chars", "20000"]) == 0
    out = capsys.readouterr().out
    assert "gpt2 not cached" in out and "sample-512" in out and "tokens/s" in out


# -- token view ----------------------------------------------------------------------------
def test_render_tokens(tok):
    text = "Hé said <b>日本</b>\n 🦊"
    pieces = token_pieces(tok, text)
    assert "".join(p for _, p in pieces) == text
    assert [i for ids, _ in pieces for i in ids] == tok.encode(text)
    html = render_tokens(tok, text)
    assert html.count("<span") == len(pieces) and "&lt;" in html and "<b>" not in html


@pytest.mark.parametrize("cpus, expected", [(32, "8"), (2, "2"), (None, "1")])
def test_training_caps_rustbpe_threads(texts, monkeypatch, cpus, expected):
    """rustbpe gets at most BPE_THREADS rayon threads unless RAYON_NUM_THREADS says otherwise."""
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.setattr(T.os, "cpu_count", lambda: cpus)
    T.train_tokenizer(texts, 300, progress=False)
    assert T.os.environ["RAYON_NUM_THREADS"] == expected
    monkeypatch.setenv("RAYON_NUM_THREADS", "3")
    T.train_tokenizer(texts, 300, progress=False)
    assert T.os.environ["RAYON_NUM_THREADS"] == "3"
