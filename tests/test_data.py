"""Corpus reading and the FineWeb-Edu downloader, against a local fake Hub on 127.0.0.1."""
import hashlib
import http.server
import re
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tinylab import data
from tinylab.data import CorpusError, download_shards
from tinylab.download import DownloadError, DownloadStopped
from tinylab.errors import cli


def write_shard(path: Path, texts: list[str], row_group_size: int = 50) -> bytes:
    pq.write_table(pa.table({"text": texts}), path, row_group_size=row_group_size)
    return path.read_bytes()


class FakeHub(http.server.ThreadingHTTPServer):
    """Just enough of the Hub's resolve API: HEAD gives ETag/X-Repo-Commit/Content-Length,
    GET serves bytes with Range support; `drop_after` cuts the next full GET after n bytes."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.drop_after, self.log = files, None, []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        m = re.fullmatch(rf"/datasets/{data.REPO_ID}/resolve/main/(shard_\d+\.parquet)", self.path)
        return (m.group(1), self.server.files.get(m.group(1))) if m else (None, None)

    def _headers(self, code, body_len, total, etag, extra=()):
        self.send_response(code)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("Content-Length", str(body_len))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        name, blob = self._file()
        self.server.log.append(("HEAD", name, None))
        if blob is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._headers(200, len(blob), len(blob), hashlib.sha256(blob).hexdigest())

    def do_GET(self):
        name, blob = self._file()
        rng = self.headers.get("Range")
        self.server.log.append(("GET", name, rng))
        etag = hashlib.sha256(blob).hexdigest()
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        body = blob[start:]
        if rng:
            self._headers(206, len(body), len(blob), etag, [("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")])
        else:
            self._headers(200, len(body), len(blob), etag)
        cut = self.server.drop_after
        if cut is not None:  # simulate a dropped connection mid-file
            self.server.drop_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest sets it for the suite
    files, src = {}, tmp_path / "src"
    src.mkdir()
    for i in range(3):
        texts = [f"document {i}-{j} " + "lorem ipsum " * (j % 7 + 1) for j in range(400)]
        files[data.shard_name(i)] = write_shard(src / f"{i}.parquet", texts)
    server = FakeHub(files)
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_all_shards_and_skip_existing(hub, tmp_path):
    out = tmp_path / "fineweb"
    paths = download_shards(3, out_dir=out, endpoint=hub.endpoint, workers=3, progress=False)
    assert [p.name for p in paths] == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]
    assert all(p.read_bytes() == hub.files[p.name] for p in paths)
    assert not list(out.glob("*.part"))
    hub.log.clear()
    download_shards(3, out_dir=out, endpoint=hub.endpoint, progress=False)
    assert hub.log == []  # finished shards are not fetched again


def test_dropped_connection_resumes_with_range(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants
    # huggingface_hub streams in 10 MB chunks; small ones make bytes land on disk before the cut
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    hub.drop_after = 5000
    path = download_shards(2, out_dir=tmp_path, endpoint=hub.endpoint, workers=1, progress=False)[0]
    gets = [rng for verb, name, rng in hub.log if verb == "GET" and name == path.name]
    assert gets[0] is None and len(gets) == 2
    assert 0 < int(re.fullmatch(r"bytes=(\d+)-", gets[1]).group(1)) <= 5000  # resumed, not restarted
    assert path.read_bytes() == hub.files[path.name]


def test_killed_download_leaves_part_that_next_call_resumes(hub, tmp_path):
    name = data.shard_name(0)
    blob = hub.files[name]
    etag = hashlib.sha256(blob).hexdigest()[:16]
    (tmp_path / f"{name}.{etag}.part").write_bytes(blob[:7000])  # what a killed process leaves
    assert not list(tmp_path.glob("shard_*.parquet"))  # the partial is not mistaken for a shard
    path = data.download_shard(0, tmp_path, endpoint=hub.endpoint)
    assert ("GET", name, "bytes=7000-") in hub.log
    assert path.read_bytes() == blob and not list(tmp_path.glob("*.part"))


def test_part_of_other_version_is_discarded(hub, tmp_path):
    name = data.shard_name(1)
    (tmp_path / f"{name}.deadbeefdeadbeef.part").write_bytes(b"x" * 100)
    path = data.download_shard(1, tmp_path, endpoint=hub.endpoint)
    assert path.read_bytes() == hub.files[name]
    assert ("GET", name, None) in hub.log and not list(tmp_path.glob("*.part"))


def test_corrupt_download_is_retried_then_reported(hub, tmp_path):
    hub.files[data.shard_name(0)] = b"PAR1 this is not parquet PAR1"
    out = tmp_path / "fineweb"
    out.mkdir()
    with pytest.raises(DownloadError, match=r"shard_00000\.parquet.*not a readable parquet file"):
        data.download_shard(0, out, endpoint=hub.endpoint, retries=2, backoff=0)
    assert sum(verb == "GET" for verb, *_ in hub.log) == 2
    assert not list(out.iterdir())  # nothing that looks complete


def dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def users_own_shard(out: Path) -> bytes:
    """What a user may keep under a shard's name: their own corpus with another column (fails validation)."""
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"body": ["my own document"] * 5}), out / data.shard_name(0))
    write_shard(out / data.shard_name(1), ["a good shard"])
    return (out / data.shard_name(0)).read_bytes()


@pytest.mark.parametrize("why", ["HF_HUB_OFFLINE", "unreachable", "bad-download"])
def test_a_shard_that_fails_validation_is_kept_when_no_replacement_comes(hub, tmp_path, monkeypatch, why):
    """It used to be deleted before the download was even tried: offline, the user's file was simply gone."""
    import huggingface_hub.constants

    out = tmp_path / "fineweb"
    mine = users_own_shard(out)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", why == "HF_HUB_OFFLINE")
    hub.files[data.shard_name(0)] = b"PAR1 this is not parquet PAR1"
    endpoint = dead_endpoint() if why == "unreachable" else hub.endpoint
    with pytest.raises(DownloadError) as e:
        download_shards(2, out_dir=out, endpoint=endpoint, retries=2, backoff=0, progress=False)
    assert (out / data.shard_name(0)).read_bytes() == mine and not list(out.glob("*.part"))
    assert re.match(rf"{re.escape(str(out / data.shard_name(0)))} has no 'text' column .*failed validation and is "
                    rf"kept as it is.*move it elsewhere.*none could be made: "
                    rf"({'cannot reach' if why != 'bad-download' else 'shard_00000.parquet: download failed'})",
                    str(e.value)), str(e.value)


def test_the_cli_offline_keeps_a_shard_that_fails_validation_and_says_so(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mine = users_own_shard(data.corpus_dir("fineweb"))
    assert cli(data.main, ["download", "-n", "2", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: .*shard_00000\.parquet has no 'text' column.*failed validation and is "
                                      r"kept.*HF_HUB_OFFLINE is set", err[0]), err
    assert (data.corpus_dir("fineweb") / data.shard_name(0)).read_bytes() == mine


def test_a_shard_that_fails_validation_is_replaced_by_a_good_download(hub, tmp_path):
    out = tmp_path / "fineweb"
    users_own_shard(out)
    paths = download_shards(2, out_dir=out, endpoint=hub.endpoint, progress=False)
    assert paths[0].read_bytes() == hub.files[paths[0].name] and not list(out.glob("*.part"))
    assert ("GET", paths[0].name, None) in hub.log and ("GET", paths[1].name, None) not in hub.log


def test_a_stopped_transfer_ends_at_its_next_chunk_and_the_next_call_resumes(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    class StopAtThirdLook(threading.Event):  # fetch looks before it starts, then before writing each chunk
        looks = 0

        def is_set(self):
            self.looks += 1
            return self.looks >= 3

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    name, out = data.shard_name(0), tmp_path / "fineweb"
    with pytest.raises(DownloadStopped, match="stopped; run the command again to resume"):
        data.download_shard(0, out, endpoint=hub.endpoint, stop=StopAtThirdLook())
    assert [(p.name.endswith(".part"), p.stat().st_size) for p in out.iterdir()] == [(True, 1024)]  # one chunk
    assert sum(verb == "GET" for verb, *_ in hub.log) == 1  # a stop is not retried
    data.download_shard(0, out, endpoint=hub.endpoint)
    assert ("GET", name, "bytes=1024-") in hub.log and (out / name).read_bytes() == hub.files[name]


def test_a_stop_cuts_the_backoff_short(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    stop, start = threading.Event(), time.monotonic()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(DownloadStopped):
        data.download_shard(0, tmp_path, endpoint=dead_endpoint(), retries=3, backoff=60, stop=stop)
    assert time.monotonic() - start < 10


def test_ctrl_c_stops_the_pool_at_once_and_starts_no_queued_shard(tmp_path, monkeypatch):
    """Ctrl-C used to wait for every queued shard to download (the pool's `with` exit), then exit. Here the
    KeyboardInterrupt comes where a real Ctrl-C lands: in the main thread's wait for the shards, once both workers
    are busy and the other six shards are queued."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    started, stopped, workers, busy = [], [], set(), threading.Event()

    def transfer(index, out_dir, *, stop=None, **kw):  # a shard in flight until it is told to stop
        started.append(index)
        workers.add(threading.current_thread())
        if index == 1:
            busy.set()
        if (stop or threading.Event()).wait(30):  # unstopped, a transfer would take 30 s: far beyond the bound below
            stopped.append(index)
            raise DownloadStopped("stopped")
        return out_dir / data.shard_name(index)

    def as_completed(futures):  # the main thread's wait for the shards, interrupted
        assert busy.wait(30)
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "download_shard", transfer)
    monkeypatch.setattr(data, "as_completed", as_completed)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        download_shards(8, out_dir=tmp_path, workers=2, progress=False)
    elapsed = time.monotonic() - start
    for worker in workers:  # the workers end too, without taking another shard
        worker.join(30)
    assert elapsed < 15 and sorted(started) == [0, 1] and sorted(stopped) == [0, 1]  # 15: room for a loaded CI
    assert not any(worker.is_alive() for worker in workers)


def test_missing_shard_is_one_clear_error(hub, tmp_path):
    with pytest.raises(DownloadError, match="shard_00007.parquet does not exist"):
        data.download_shard(7, tmp_path, endpoint=hub.endpoint, backoff=0)


def test_offline_is_one_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face Hub.*sample"):
        download_shards(2, out_dir=tmp_path, endpoint=dead_endpoint(), retries=2, backoff=0, progress=False)


def test_hf_hub_offline_env_is_one_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        download_shards(2, out_dir=tmp_path, progress=False)


def test_cli(monkeypatch, capsys):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert cli(data.main, ["download", "-n", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot reach the Hugging Face Hub")
    assert cli(data.main, ["info", "sample"]) == 0
    out = capsys.readouterr().out
    assert "shard_00003.parquet   val" in out and "4 shards in" in out


def test_bad_shard_count():
    with pytest.raises(DownloadError, match="at least|between 2"):
        download_shards(1)


# --- corpus reading -------------------------------------------------------------------------

def test_sample_corpus_splits():
    train, val = data.list_shards("sample", "train"), data.list_shards("sample", "val")
    assert val == data.list_shards("sample")[-1:] and val[0] not in train
    rows = data.info("sample")
    assert [r["split"] for r in rows][-1] == "val" and sum(r["docs"] for r in rows) > 0


def test_downloaded_shards_read_by_same_code(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    out = data.corpus_dir("fineweb")
    out.mkdir(parents=True)
    for i in range(3):
        write_shard(out / data.shard_name(i), [f"doc {i}.{j}" for j in range(10)])
    assert list(data.iter_texts("fineweb", "val")) == [f"doc 2.{j}" for j in range(10)]
    assert len(list(data.iter_texts("fineweb", "train"))) == 20


def fineweb_shards(tmp_path, monkeypatch, count: int, docs: int = 10) -> Path:
    """A 'fineweb' corpus of `count` small shards under a fresh TINYLAB_HOME; shard i holds "doc i.j"."""
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    out = data.corpus_dir("fineweb")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_shard(out / data.shard_name(i), [f"doc {i}.{j}" for j in range(docs)])
    return out


def test_num_shards_takes_the_first_shards_by_name_and_the_last_of_them_validates(tmp_path, monkeypatch, capsys):
    """A run's validation shard is the num_shards-th, not whatever sorts last: downloading another shard leaves a
    run of num_shards 2 or 3 as it was (num_shards 0, every shard present, moves on)."""
    out = fineweb_shards(tmp_path, monkeypatch, 3)

    def names(split, n):
        return [p.name for p in data.list_shards("fineweb", split, n)]

    assert names("train", 2) == [data.shard_name(0)] and names("val", 2) == [data.shard_name(1)]
    assert names("val", 3) == names("val", 0) == [data.shard_name(2)] and len(names("train", 3)) == 2
    assert list(data.iter_texts("fineweb", "val", num_shards=2)) == [f"doc 1.{j}" for j in range(10)]
    write_shard(out / data.shard_name(3), ["a shard downloaded later"])
    assert names("val", 2) == [data.shard_name(1)] and names("val", 3) == [data.shard_name(2)]
    assert names("val", 0) == [data.shard_name(3)]
    with pytest.raises(CorpusError, match=r"num_shards is 5 .* has 4 shard\(s\) .*`python -m tinylab.data download "
                                          r"-n 5`, or pass --num-shards 4"):
        data.list_shards("fineweb", "train", 5)
    with pytest.raises(CorpusError, match="0 \\(every shard present\\) or at least 2"):
        data.list_shards("fineweb", "train", 1)
    with pytest.raises(CorpusError, match="pass --num-shards 4 or 0"):  # the bundled sample has 4
        data.list_shards("sample", "val", 6)
    assert [r["split"] for r in data.info("fineweb", 2)] == ["train", "val", "unused", "unused"]
    assert cli(data.main, ["info", "fineweb", "-n", "3"]) == 0
    assert "shard_00002.parquet   val" in capsys.readouterr().out


def test_iter_texts_says_which_shards_its_documents_came_from(tmp_path, monkeypatch):
    """What the tokenizer records: the shards up to the one its text stopped in (empty shards on the way included),
    every shard of the split once it is read to the end."""
    out = fineweb_shards(tmp_path, monkeypatch, 5)
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), out / data.shard_name(1))  # no documents
    read = []
    texts = data.iter_texts("fineweb", "train", num_shards=0, read=read)
    assert [next(texts) for _ in range(11)][-1] == "doc 2.0" and [p.name for p in read] == [
        data.shard_name(i) for i in range(3)]
    read = []
    assert len(list(data.iter_texts("fineweb", "train", num_shards=4, read=read))) == 20
    assert [p.name for p in read] == [data.shard_name(i) for i in range(3)]


def test_shard_record_tells_a_shard_rewritten_to_the_same_size(tmp_path):
    """A shard's size alone misses a rewrite of the same length; its parquet footer (row group statistics) does not."""
    path = tmp_path / "shard_00000.parquet"
    plain = dict(compression="none", use_dictionary=False)
    pq.write_table(pa.table({"text": ["abc def", "ghi jkl"]}), path, **plain)
    before = data.shard_record(path)
    pq.write_table(pa.table({"text": ["xyz uvw", "ghi jkl"]}), path, **plain)
    after = data.shard_record(path)
    assert before["bytes"] == after["bytes"] and before["name"] == after["name"] == path.name
    assert not data.same_shard(before, after) and data.same_shard(after, data.shard_record(path))
    assert data.same_shard(dict(before, footer=None), after)  # a record without a footer: name and size
    path.write_bytes(b"not parquet at all")
    assert data.shard_record(path)["footer"] is None


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty_file"])
def test_corrupt_shard_names_the_file(tmp_path, damage):
    path = tmp_path / "shard_00000.parquet"
    blob = write_shard(path, [f"text {j}" for j in range(100)])
    path.write_bytes({"truncated": blob[: len(blob) // 2], "garbage": b"\x00" * 500, "empty_file": b""}[damage])
    with pytest.raises(CorpusError, match=re.escape(str(path))):
        list(data.iter_row_groups(path))


def test_corrupt_row_group_names_the_file(tmp_path):
    path = tmp_path / "shard_00000.parquet"
    blob = bytearray(write_shard(path, ["x" * 1000 + str(j) for j in range(200)], row_group_size=100))
    pf = pq.ParquetFile(path)
    col = pf.metadata.row_group(1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    blob[start + 10: start + col.total_compressed_size] = b"\xff" * (col.total_compressed_size - 10)
    path.write_bytes(bytes(blob))
    with pytest.raises(CorpusError, match=re.escape(str(path)) + ".*row group 1"):
        list(data.iter_row_groups(path))


def test_a_dictionary_encoded_text_column_reads_as_its_strings(tmp_path):
    """What pandas writes for a category column."""
    path = tmp_path / "shard_00000.parquet"
    pq.write_table(pa.table({"text": pa.array(["b", "a", "b"]).dictionary_encode()}), path)
    assert list(data.iter_row_groups(path)) == [["b", "a", "b"]]


def test_empty_shard_has_no_documents(tmp_path):
    path = tmp_path / "shard_00000.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert list(data.iter_row_groups(path)) in ([], [[]])


def test_prepare_corpus_downloads_or_says_why_not_in_one_line(hub, tmp_path, monkeypatch):
    """Notebook 02's cell: the sample is bundled; FineWeb shards download (resumably) from the Hub; offline,
    one line that says what to run instead of a traceback."""
    import huggingface_hub.constants

    from tinylab.presets import get_preset

    assert data.prepare_corpus(get_preset("smoke")).startswith("corpus 'sample': 4 shards bundled")
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path))
    preset = get_preset("ittybitty").override(num_shards=3)
    monkeypatch.setattr(data, "download_shards", lambda n, progress: download_shards(
        n, endpoint=hub.endpoint, workers=2, progress=progress))
    line = data.prepare_corpus(preset, progress=False)
    assert line.startswith("corpus 'fineweb': 3 shards") and "\n" not in line
    assert [p.name for p in data.list_shards("fineweb")] == [data.shard_name(i) for i in range(3)]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = data.prepare_corpus(preset.override(num_shards=4), progress=False)
    assert "FineWeb-Edu is not available" in line and "python -m tinylab.data download -n 4" in line
    line = data.prepare_corpus(preset.override(num_shards=0), progress=False)  # the shards here, none to fetch
    assert line.startswith("corpus 'fineweb': 3 shards present") and "(shard_00002.parquet) is validation" in line
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path / "empty"))
    line = data.prepare_corpus(preset.override(num_shards=0), progress=False)
    assert "found 0 shard(s)" in line and "python -m tinylab.data download -n 15" in line


def test_read_ahead_keeps_order_and_raises_where_the_error_was():
    def items():
        yield from range(5)
        raise CorpusError("row group 5 is corrupt")

    got = []
    with pytest.raises(CorpusError, match="row group 5"):
        for item in data.read_ahead(items()):
            got.append(item)
    assert got == list(range(5))


def test_read_ahead_passes_the_callers_stop_to_its_reader(tmp_path):
    path = tmp_path / "shard_00000.parquet"
    write_shard(path, [f"doc {j}" for j in range(1000)], row_group_size=10)
    stop, got = threading.Event(), []
    with pytest.raises(data.ReadStopped), data.stoppable(stop):
        for texts in data.read_ahead(data.iter_row_groups(path)):
            got.append(texts)
            stop.set()
    assert len(got) == 1  # the row groups read ahead are not handed out once the stop is set


def test_read_ahead_closed_early_stops_its_reader_and_waits_for_it():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = set(threading.enumerate())
    stream = data.read_ahead(items(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert not [t for t in set(threading.enumerate()) - before if t.name == "tinylab-read-ahead"]
    assert len(produced) <= 5
    with pytest.raises(ValueError, match="depth"):
        next(data.read_ahead(iter([1]), depth=0))


def test_an_interpreter_leaving_mid_read_exits_cleanly():
    """A reader inside pyarrow at shutdown would abort the process (SIGABRT, 'terminate called ...')."""
    import subprocess
    import sys

    code = ("import itertools; from tinylab import data; g = data.iter_texts('sample', 'train'); "
            "list(itertools.islice(g, 740))")
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "terminate" not in done.stderr, done.stderr[-500:]
