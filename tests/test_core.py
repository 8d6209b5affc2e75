"""CORE harness: nanochat's prompts, spans and scoring, checked on a hand-written fixture bundle.

The fixture (tests/fixtures/eval_bundle, the real bundle's layout) is scored with a byte-level
tokenizer (one token per byte, BOS = 256) and a bigram model whose logits for the next token depend
only on the current one: every row prefers 'a' (logit 3), 'X' is followed by a space (5), and so
is '?' (5). Worked out by hand, in file order:

    mc.jsonl (mc_zeroshot, and mc_fewshot one-shot: a bigram ignores the shots)
      "aa" | "bb"               share of 'a' 1 vs 0                      -> 0 = gold   right
      "ba" | "ab" | "bb"        0.5, 0.5, 0: the tie goes to the first   -> 0 != 1     wrong
      "aaaab" | "aaaaabb"       after the common prefix "aaaa": "b" vs "abb" -> 1 = gold right
                                (whole choices would pick 0: 4/5 > 5/7 — the prefix logic matters)
      "b" | "a"                                                          -> 1 != 0     wrong
    schema.jsonl: the common suffix " <continuation>" is scored; its first token is predicted from
      the context's last byte, so the context ending in 'X' wins
      "The cat" | "The doX"     -> 1 = gold right;  "A X" | "A Y" -> 0 != 1 wrong;
      "one" | "two" | "siX"     -> 2 = gold right
    lm.jsonl: greedy after '?' is " " then "a", "a", ...
      "Say it?" + "aa" right;  "Say it? " + "a" right (the context is trimmed);
      "Say it." + "aa" wrong ('.' is followed by 'a');  "Why?" + "ab" wrong ('a' is followed by 'a')
"""
import csv
import functools
import hashlib
import http.server
import io
import json
import math
import random
import re
import shutil
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tinylab import core
from tinylab.core import CoreError, evaluate_core
from tinylab.download import DownloadError
from tinylab.run import RECORDS
from tinylab.tokenizer import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "eval_bundle"
RIGHT = {"mc_zeroshot": [1, 0, 1, 0], "mc_fewshot": [1, 0, 1, 0], "schema": [1, 0, 1], "lm": [1, 1, 0, 0]}
BASELINE = {"mc_zeroshot": 0.25, "mc_fewshot": 0.25, "schema": 0.5, "lm": 0.0}


class Bigram(torch.nn.Module):
    """A stand-in for tinylab's GPT: logits[b, t] = table[idx[b, t]], the same call signature."""

    def __init__(self, table: torch.Tensor, sequence_len: int):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.config = SimpleNamespace(sequence_len=sequence_len, vocab_size=table.size(0))
        self.calls = 0

    def forward(self, idx, targets=None, loss_reduction="mean"):
        assert idx.size(1) <= self.config.sequence_len, "tinylab's GPT refuses rows longer than its context"
        self.calls += 1
        logits = self.table[idx]
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction=loss_reduction)


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")


def fixture_model(sequence_len: int = 64) -> Bigram:
    table = torch.zeros(257, 257)
    table[:, ord("a")] = 3.0
    table[ord("X"), ord(" ")] = 5.0
    table[ord("?"), ord(" ")] = 5.0
    return Bigram(table, sequence_len)


def run(model=None, **kw):
    return evaluate_core(model or fixture_model(), byte_tokenizer(), bundle_dir=kw.pop("bundle_dir", FIXTURE),
                         progress=False, **kw)


# -- scoring -------------------------------------------------------------------------------
def test_fixture_scores_as_worked_out_by_hand():
    result = run(batch_size=3)
    got = {t.task: (t.n, t.accuracy, t.baseline, t.centered, t.truncated) for t in result.tasks}
    want = {}
    for task, right in RIGHT.items():
        acc, b = sum(right) / len(right), BASELINE[task]
        want[task] = (len(right), acc, b, (acc - b) / (1 - b), 0)
    for task in want:
        assert got[task] == pytest.approx(want[task]), task
    assert [t.task for t in result.tasks] == list(RIGHT)  # core.yaml's order
    assert result.core == pytest.approx((1 / 3 + 1 / 3 + 1 / 3 + 0.5) / 4)
    assert result.n == 15 and [t.shots for t in result.tasks] == [0, 1, 0, 0]


def test_batch_size_changes_nothing_but_the_number_of_forwards():
    results = {}
    for bs in (1, 2, 5, 64):
        model = fixture_model()
        results[bs] = ([t.accuracy for t in run(model, batch_size=bs).tasks], model.calls)
    assert len({tuple(accs) for accs, _ in results.values()}) == 1
    assert results[64][1] == 4 < results[1][1]  # one forward per task when everything fits


def test_max_per_task_scores_the_first_n_after_nanochats_shuffle():
    for k in (2, 3):
        result = run(max_per_task=k)
        for t in result.tasks:
            order = list(range(len(RIGHT[t.task])))
            random.Random(1337).shuffle(order)
            assert t.n == min(k, len(order))
            assert t.accuracy == pytest.approx(sum(RIGHT[t.task][i] for i in order[:k]) / t.n)
    assert run(max_per_task=2).record()["max_per_task"] == 2


def test_max_per_task_too_small_for_a_fewshot_task():
    with pytest.raises(CoreError, match=r"mc_fewshot has 1 examples.*1-shot.*raise max_per_task"):
        run(max_per_task=1)


def test_long_rows_are_cut_from_the_left_and_counted():
    """At a context of 10 tokens: every one-shot prompt, "The cat ran" (12) and the two 11-token
    lm rows are cut; the scored tokens stay in the kept tail, so no answer changes."""
    result = run(fixture_model(sequence_len=10))
    assert {t.task: t.truncated for t in result.tasks} == {"mc_zeroshot": 0, "mc_fewshot": 4, "schema": 1, "lm": 2}
    assert [t.accuracy for t in result.tasks] == [t.accuracy for t in run().tasks]
    assert result.record()["truncated"] == 7


def test_truncate_shifts_spans_and_keeps_at_least_one_predicting_token():
    ex = core.truncate(core.Example([list(range(10)), [7, 8]], [3, 1], [10, 2], 0), 4)
    assert ex.rows == [[6, 7, 8, 9], [7, 8]] and ex.starts == [1, 1] and ex.ends == [4, 2] and ex.truncated


def nanochat_find_common_length(token_sequences, direction="left"):  # verbatim from nanochat c72b8b2
    min_len = min(len(seq) for seq in token_sequences)
    indices = {"left": range(min_len), "right": range(-1, -min_len - 1, -1)}[direction]
    for i, idx in enumerate(indices):
        token = token_sequences[0][idx]
        if not all(seq[idx] == token for seq in token_sequences):
            return i
    return min_len


def test_common_length():
    assert core.common_length([[1, 2, 3], [1, 2, 4], [1, 2]], "left") == 2
    assert core.common_length([[1, 2], [1, 2, 3]], "left") == 2
    assert core.common_length([[5, 1, 9], [6, 2, 1, 9]], "right") == 2
    assert core.common_length([[1], [2]], "right") == 0
    rng = random.Random(0)
    for _ in range(3000):
        rows = [[rng.randint(0, 2) for _ in range(rng.randint(0, 6))] for _ in range(rng.randint(1, 4))]
        for d in ("left", "right"):
            assert core.common_length(rows, d) == nanochat_find_common_length(rows, d), (rows, d)


@torch.no_grad()
def nanochat_forward_model(model, input_ids):  # verbatim from nanochat c72b8b2 (core_eval.py)
    batch_size, seq_len = input_ids.size()
    outputs = model(input_ids)
    target_ids = torch.roll(input_ids, shifts=-1, dims=1)
    losses = torch.nn.functional.cross_entropy(
        outputs.view(batch_size * seq_len, -1), target_ids.view(batch_size * seq_len), reduction="none"
    ).view(batch_size, seq_len)
    losses[:, -1] = float("nan")
    predictions = outputs.argmax(dim=-1)
    return losses, predictions


def test_forward_rows_is_nanochats_forward_model_a_few_rows_at_a_time(monkeypatch):
    from tinylab.model import build_model
    from tinylab.presets import get_preset
    torch.manual_seed(0)
    model = build_model(get_preset("smoke").model)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # logits far from uniform
    x = torch.randint(0, 512, (5, 20))
    monkeypatch.setattr(core, "LOGITS_BYTES", 2 * 20 * 512 * 4)  # two rows per forward: 3 forwards
    losses, predictions = core.forward_rows(model, x)
    want_losses, want_predictions = nanochat_forward_model(model, x)
    assert torch.allclose(losses[:, :-1], want_losses[:, :-1], atol=1e-5)
    assert torch.equal(predictions, want_predictions)


def test_smoke_model_runs_the_fixture():
    from tinylab.model import build_model
    from tinylab.presets import get_preset
    result = run(build_model(get_preset("smoke").model), batch_size=4)
    assert len(result.tasks) == 4 and all(0 <= t.accuracy <= 1 for t in result.tasks) and math.isfinite(result.core)


# -- prompts -------------------------------------------------------------------------------
# nanochat's templates, verbatim from nanochat/core_eval.py at c72b8b2 (MIT licence)
NANOCHAT_MC = """
{%- for example in fewshot_examples -%}
{{ example.query }}{{ continuation_delimiter }}{{ example.choices[example.gold] }}

{% endfor -%}
{{ item.query }}{{ continuation_delimiter }}{{ choice }}""".strip()
NANOCHAT_SCHEMA = """
{%- for example in fewshot_examples -%}
{{ example.context_options[example.gold] }}{{ continuation_delimiter }}{{ example.continuation }}

{% endfor -%}
{{ context }}{{ continuation_delimiter }}{{ item.continuation }}""".strip()
NANOCHAT_LM = """
{%- for example in fewshot_examples -%}
{{ example.context | trim }}{{ continuation_delimiter }}{{ example.continuation }}

{% endfor -%}
{{ item.context | trim }}{{ continuation_delimiter }}{% if include_continuation %}{{ item.continuation }}{% endif %}""".strip()


@functools.cache
def template(source):
    from jinja2 import Template
    return Template(source)


def nanochat_render(task_type, item, delim, shots):
    ctx = dict(fewshot_examples=shots, continuation_delimiter=delim, item=item)
    if task_type == "multiple_choice":
        return [template(NANOCHAT_MC).render(choice=c, **ctx) for c in item["choices"]]
    if task_type == "schema":
        return [template(NANOCHAT_SCHEMA).render(context=c, **ctx) for c in item["context_options"]]
    t = template(NANOCHAT_LM)
    return [t.render(include_continuation=False, **ctx).strip(), t.render(include_continuation=True, **ctx)]


def random_text(rng):
    return "".join(rng.choice(["a", "b", " ", "\n", "Q:", "é", "  ", "\t"]) for _ in range(rng.randint(0, 8)))


def random_item(rng, task_type):
    n = rng.randint(2, 4)
    if task_type == "multiple_choice":
        return {"query": random_text(rng), "choices": [random_text(rng) for _ in range(n)], "gold": rng.randrange(n)}
    if task_type == "schema":
        return {"context_options": [random_text(rng) for _ in range(n)], "continuation": random_text(rng),
                "gold": rng.randrange(n)}
    return {"context": random_text(rng), "continuation": random_text(rng)}


def test_rendering_equals_nanochats_jinja_templates():
    pytest.importorskip("jinja2")
    rng = random.Random(0)
    for task_type, render in core.RENDER.items():
        for _ in range(150):
            items = [random_item(rng, task_type) for _ in range(rng.randint(1, 4))]
            delim = rng.choice([" ", "\nAnswer: ", "", "\n"])
            assert render(items[0], delim, items[1:]) == nanochat_render(task_type, items[0], delim, items[1:])


def test_fewshot_rendering_hand_checked():
    """mc.jsonl shuffled with Random(1337) is its lines 2, 1, 4, 3. Example 0 (line 2: "ba" | "ab" | "bb")
    gets one shot, Random(1234).sample([1, 2, 3], 1) = [2]: example 2 is line 4 ("Pick", right answer "b")."""
    task = core.load_tasks(FIXTURE)[1]
    examples = core.task_examples(task, FIXTURE)
    assert [e["choices"][0] for e in examples] == ["ba", "aa", "b", "aaaab"]
    assert core.render(task, examples, 0) == ["Pick\nAnswer: b\n\nPick\nAnswer: ba",
                                              "Pick\nAnswer: b\n\nPick\nAnswer: ab",
                                              "Pick\nAnswer: b\n\nPick\nAnswer: bb"]


def test_lm_prompts_trim_the_context_and_the_first_prompt():
    assert core.render_lm({"context": " Say it? ", "continuation": "aa"}, " ", []) == ["Say it?", "Say it? aa"]


def test_fewshot_draws_what_nanochat_draws():
    for n in (2, 3, 11, 50, 85, 86, 87, 300):
        for idx in {0, 1, n // 2, n - 1}:
            for k in (1, 3, 5, 10):
                if k < n:
                    want = random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k)
                    assert core.fewshot(list(range(n)), idx, k) == want


def test_lm_tokens_must_extend_the_prompt():
    task = core.Task("t", "language_modeling", "x.jsonl", 0, " ", 0.0)
    with pytest.raises(CoreError, match="t, example 7: the tokens of the prompt are not a prefix"):
        core.spans(task, [[256, 1, 2], [256, 1, 3, 4]], "t, example 7")


def test_centered_accuracy():
    assert core.centered(0.5, 25) == pytest.approx(1 / 3)
    assert core.centered(0.25, 25) == 0.0
    assert core.centered(1.0, 62) == pytest.approx(1.0)
    assert core.centered(0.3, 62) == pytest.approx((0.3 - 0.62) / 0.38)  # below chance is negative


def test_to_csv_and_record(tmp_path):
    result = run()
    path = result.to_csv(tmp_path / "core.csv")
    rows = list(csv.DictReader(open(path)))
    assert [r["task"] for r in rows] == [*RIGHT, "CORE"]
    assert float(rows[-1]["centered"]) == pytest.approx(result.core) and rows[-1]["n"] == "15"
    rec = json.loads(json.dumps(result.record(step=7, tokens=7168)))
    assert rec.pop("kind") == "core" and list(rec) == list(RECORDS["core"])  # the metrics schema, in its order
    assert rec["core"] == pytest.approx(0.375) and rec["n"] == 15 and (rec["step"], rec["tokens"]) == (7, 7168)
    assert list(rec["tasks"]) == list(RIGHT) and rec["seconds"] >= 0
    assert rec["tasks"]["lm"] == dict(n=4, accuracy=0.5, baseline=0.0, centered=0.5)
    assert rec["tasks"]["schema"] == pytest.approx(dict(n=3, accuracy=2 / 3, baseline=0.5, centered=1 / 3))
    assert list(result.table().columns) == ["task", "type", "shots", "n", "accuracy", "baseline", "centered",
                                            "truncated", "seconds"]


# -- bad input -----------------------------------------------------------------------------
def damaged_copy(tmp_path, line: str) -> Path:
    bundle = shutil.copytree(FIXTURE, tmp_path / "eval_bundle")
    with open(bundle / "eval_data" / "reading_comprehension" / "lm.jsonl", "a") as f:
        f.write(line + "\n")
    return bundle


@pytest.mark.parametrize("line, message", [
    ('{"context": "Hi?", "continuation": ', r"lm\.jsonl:5: not valid JSON"),
    ('{"context": "Hi?"}', r"lm\.jsonl:5: a language_modeling example needs the fields context, continuation"),
])
def test_bad_task_line_is_named_before_any_scoring(tmp_path, line, message):
    model = fixture_model()
    with pytest.raises(CoreError, match=message):
        run(model, bundle_dir=damaged_copy(tmp_path, line))
    assert model.calls == 0


def test_not_a_bundle(tmp_path):
    with pytest.raises(CoreError, match="is not a CORE eval bundle \\(core.yaml is missing\\)"):
        run(bundle_dir=tmp_path)


def test_tokenizer_without_bos_or_too_big():
    no_bos = SimpleNamespace(encode_batch=lambda texts, prepend_bos=False: [])
    with pytest.raises(CoreError, match="BOS token"):
        evaluate_core(fixture_model(), no_bos, bundle_dir=FIXTURE, progress=False)
    small = Bigram(torch.zeros(100, 100), 64)
    with pytest.raises(CoreError, match="the tokenizer has 257 ids but the model only 100"):
        evaluate_core(small, byte_tokenizer(), bundle_dir=FIXTURE, progress=False)


# -- the bundle download -------------------------------------------------------------------
def bundle_zip(root: Path = FIXTURE) -> bytes:
    """The folder zipped as the real bundle is: everything under one top-level eval_bundle/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(root.rglob("*")):
            z.write(f, "eval_bundle/" + f.relative_to(root).as_posix())
    return buf.getvalue()


class Server(http.server.ThreadingHTTPServer):
    def __init__(self, blob: bytes):
        super().__init__(("127.0.0.1", 0), Handler)
        self.blob, self.log = blob, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/eval_bundle.zip"


class Handler(http.server.BaseHTTPRequestHandler):
    """HEAD with ETag and size, GET with Range: what S3 answers and tinylab.download needs."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self, body=False):
        blob, rng = self.server.blob, self.headers.get("Range")
        self.server.log.append((self.command, rng))
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("ETag", f'"{hashlib.md5(blob).hexdigest()}"')
        self.send_header("Content-Length", str(len(blob) - start))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.end_headers()
        if body:
            self.wfile.write(blob[start:])

    def do_GET(self):
        self.do_HEAD(body=True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("TINYLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # tests that download turn it off
    return tmp_path / "home"


@pytest.fixture
def server(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    s = Server(bundle_zip())
    threading.Thread(target=s.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_download_unpacks_atomically_and_is_reused(home, server):
    path = core.ensure_bundle(url=server.url, sha256=sha(server.blob))
    assert path == home / "eval_bundle" and sorted(p.name for p in home.iterdir()) == ["eval_bundle"]
    assert (path / core.MARKER).read_text().strip() == sha(server.blob)
    assert [t.label for t in core.load_tasks(path)] == list(RIGHT)
    n = len(server.log)
    assert core.ensure_bundle(url=server.url, sha256=sha(server.blob)) == path and len(server.log) == n


def test_changed_bundle_is_refused_and_nothing_kept(home, server):
    pinned = "0123456789abcdef" * 4
    with pytest.raises(DownloadError, match=f"SHA-256 is {sha(server.blob)[:16]}.*pinned {pinned[:16]}"):
        core.ensure_bundle(url=server.url, sha256=pinned)
    assert list(home.iterdir()) == []


def test_offline_says_where_to_put_the_zip(home):
    with pytest.raises(DownloadError) as e:
        evaluate_core(fixture_model(), byte_tokenizer(), progress=False)
    assert str(home / "eval_bundle.zip") in str(e.value) and core.BUNDLE_URL in str(e.value)
    assert core.BUNDLE_SHA256 in str(e.value)


def test_zip_placed_by_hand_is_used_without_network(home):
    home.mkdir()
    blob = bundle_zip()
    (home / "eval_bundle.zip").write_bytes(blob)
    path = core.ensure_bundle(sha256=sha(blob))  # HF_HUB_OFFLINE: any download attempt would fail
    assert (path / "core.yaml").is_file() and not (home / "eval_bundle.zip").exists()


def test_zip_by_hand_with_another_hash_names_both(home):
    home.mkdir()
    (home / "eval_bundle.zip").write_bytes(blob := bundle_zip())
    with pytest.raises(CoreError, match=f"has SHA-256 {sha(blob)}, but this tinylab pins {core.BUNDLE_SHA256}"):
        core.ensure_bundle()
    assert sorted(p.name for p in home.iterdir()) == ["eval_bundle.zip"]  # the user's file is left alone


@pytest.mark.parametrize("blob, message", [
    (b"PK\x03\x04 not really a zip", "is not a readable zip"),
    (None, "has no eval_bundle/core.yaml"),
])
def test_corrupt_zip_is_one_error_and_leaves_nothing(home, tmp_path, blob, message):
    if blob is None:  # a fine zip with the wrong layout
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "readme.txt").write_text("hi")
        blob = bundle_zip(tmp_path / "other")
    home.mkdir()
    (home / "eval_bundle.zip").write_bytes(blob)
    with pytest.raises(CoreError, match=message):
        core.ensure_bundle(sha256=sha(blob))
    assert sorted(p.name for p in home.iterdir()) == ["eval_bundle.zip"]


def test_unpacked_bundle_of_another_pin_or_origin(home):
    home.mkdir()
    (home / "eval_bundle.zip").write_bytes(blob := bundle_zip())
    core.ensure_bundle(sha256=sha(blob))
    with pytest.raises(CoreError, match=f"unpacked from a zip with SHA-256 {sha(blob)}, but this tinylab pins "
                                        f"{core.BUNDLE_SHA256}"):
        core.ensure_bundle()
    (home / "eval_bundle" / core.MARKER).unlink()
    with pytest.raises(CoreError, match="not unpacked by tinylab"):
        core.ensure_bundle(sha256=sha(blob))
