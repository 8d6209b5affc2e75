"""CORE: DCLM's 22-task few-shot score, computed exactly as nanochat computes it.

CORE (Li et al. 2024, DataComp-LM, arXiv:2406.11794) averages over 22 tasks the accuracy above
chance, centered = (acc - baseline) / (1 - baseline): 0 is guessing, 1 is perfect. This module
follows nanochat at commit c72b8b2 (2025-11-03; scripts/base_eval.py and nanochat/core_eval.py),
so a tinylab model's CORE is comparable with the numbers nanochat reports:

- the tasks (label, dataset_uri, num_fewshot, continuation_delimiter, icl_task_type) come from the
  bundle's core.yaml, the random baselines (percent) from eval_meta_data.csv, the examples from
  eval_data/<category>/<task>.jsonl;
- a task's examples are shuffled with random.Random(1337), then cut to max_per_task;
- example i's few-shot examples are random.Random(1234 + i).sample(the other examples, k);
- prompts are the strings nanochat's Jinja templates render (shots end in a blank line), encoded
  with BOS in front;
- multiple choice: one context, several continuations; the tokens after the rows' common prefix
  are scored and the lowest mean loss wins. Schema: several contexts, one continuation; the rows'
  common suffix is scored. Language modeling: the greedy (argmax) continuation must equal the
  reference token for token;
- a row longer than the model's context keeps its last sequence_len tokens.

Deliberate deviations, none of which changes a number nanochat computes:
- nanochat's own model never truncates (its rotary table covers 10x its context); tinylab's model
  refuses positions past sequence_len, so rows are cut from the left as nanochat does for GPT-2,
  and each task reports how many examples were cut (`truncated`);
- where nanochat would assert (a continuation longer than the context), the part that fits is
  scored; where it would crash (a malformed line, max_per_task too small for a k-shot task, a
  tokenizer without BOS), tinylab raises one CoreError that says what to do;
- examples are scored several at a time in one right-padded batch (padding is BOS, as in nanochat;
  causal attention keeps it from changing a row), with at most LOGITS_BYTES of logits per forward;
- accuracy is correct / n in float64 (nanochat takes a float32 mean: differences below 1e-7).
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import download, paths
from .devices import autocast as device_autocast
from .errors import TinylabError

BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"  # nanochat's EVAL_BUNDLE_URL
# SHA-256 of the eval_bundle.zip served at BUNDLE_URL. Not computed here (this code was written
# offline): it is the value that several unrelated public projects pinned after downloading the
# zip (2026). If the download disagrees, the error names both hashes and nothing is kept.
BUNDLE_SHA256 = "90a7c19e28ee7a52b4f6e1f87658deb9fde7f63deba2379045bdb1fe9ea5d200"
MARKER = ".tinylab-zip-sha256"  # written into an unpacked bundle: the hash of the zip it came from
SHUFFLE_SEED, FEWSHOT_SEED = 1337, 1234  # nanochat's seeds (base_eval.py, core_eval.py)
TASK_FIELDS = {  # what each task type reads from a jsonl example
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "language_modeling": ("context", "continuation"),
}
ENCODE_CHUNK = 512  # examples tokenized at once: bounds the token lists, leaves enough to sort by length
LOGITS_BYTES = 1 << 30  # fp32 (rows, T, vocab) logits per forward; cross-entropy briefly needs a second copy


class CoreError(TinylabError):
    """A CORE evaluation that cannot run as asked; the message says what to do."""


# -- the bundle ----------------------------------------------------------------------------
def default_bundle_dir() -> Path:
    return paths.home() / "eval_bundle"


def ensure_bundle(*, url: str = BUNDLE_URL, sha256: str | None = BUNDLE_SHA256) -> Path:
    """$TINYLAB_HOME/eval_bundle, unpacked from eval_bundle.zip there (downloaded if it is missing).

    A zip put there by hand is used without the network. After a successful unpack the zip is
    deleted; the bundle directory records the zip's hash, checked on every later call.
    """
    dest = default_bundle_dir()
    if dest.exists():
        _check_unpacked(dest, sha256)
        return dest
    zip_path = dest.with_name("eval_bundle.zip")
    if not zip_path.exists():
        hint = (f"Without network, download {url} elsewhere and put it at {zip_path} "
                f"(SHA-256 {sha256}); tinylab unpacks it from there.")
        download.fetch(url, zip_path, sha256=sha256, offline_hint=hint)
    got = download.sha256_of(zip_path)
    if sha256 is not None and got != sha256:
        raise CoreError(f"{zip_path} has SHA-256 {got}, but this tinylab pins {sha256}: it is another "
                        f"version of the eval bundle (or damaged). Delete it to download the pinned one")
    _unpack(zip_path, dest, got)
    zip_path.unlink(missing_ok=True)
    return dest


def _check_unpacked(dest: Path, sha256: str | None) -> None:
    marker = dest / MARKER
    if not marker.is_file():
        raise CoreError(f"{dest} exists but was not unpacked by tinylab (no {MARKER}): delete it to "
                        f"fetch the pinned bundle, or pass bundle_dir='{dest}' to use it as it is")
    recorded = marker.read_text().strip()
    if sha256 is not None and recorded != sha256:
        raise CoreError(f"{dest} was unpacked from a zip with SHA-256 {recorded}, but this tinylab pins "
                        f"{sha256}: delete {dest} to fetch the pinned bundle")


def _unpack(zip_path: Path, dest: Path, digest: str) -> None:
    """Unzip into a temporary directory next to dest, then rename: dest is complete or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".eval_bundle.", dir=dest.parent))
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        root = tmp / "eval_bundle"  # the zip holds one top-level folder, as nanochat expects
        if not (root / "core.yaml").is_file():
            raise CoreError(f"{zip_path} has no eval_bundle/core.yaml: it is not the CORE eval bundle; delete it")
        (root / MARKER).write_text(digest + "\n")
        try:
            os.replace(root, dest)
        except OSError:
            if not (dest / MARKER).is_file():  # not another process finishing first: a real failure
                raise
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise CoreError(f"{zip_path} is not a readable zip ({e}): delete it and run again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- tasks and examples --------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    label: str
    task_type: str     # multiple_choice | schema | language_modeling
    dataset_uri: str   # path under eval_data/
    num_fewshot: int
    delimiter: str     # between context and continuation
    baseline: float    # accuracy of random guessing, in percent (eval_meta_data.csv)


def load_tasks(bundle_dir) -> list[Task]:
    """CORE's tasks, in core.yaml's order, with their random baselines."""
    import yaml

    bundle_dir = Path(bundle_dir)
    config, meta = bundle_dir / "core.yaml", bundle_dir / "eval_meta_data.csv"
    for f in (config, meta):
        if not f.is_file():
            raise CoreError(f"{bundle_dir} is not a CORE eval bundle ({f.name} is missing): pass the folder "
                            f"that holds core.yaml, or bundle_dir=None to download the bundle")
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))["icl_tasks"]
        with open(meta, encoding="utf-8", newline="") as f:
            baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
        tasks = [Task(t["label"], t["icl_task_type"], t["dataset_uri"], int(t["num_fewshot"][0]),
                      t.get("continuation_delimiter", " "), baselines[t["label"]]) for t in raw]
    except (yaml.YAMLError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CoreError(f"{bundle_dir}: core.yaml or eval_meta_data.csv is damaged ({type(e).__name__}: {e}); "
                        f"delete the bundle and run again") from e
    for t in tasks:
        if t.task_type not in TASK_FIELDS:
            raise CoreError(f"{config}: task {t.label} has type {t.task_type!r}; CORE knows {sorted(TASK_FIELDS)}")
    return tasks


def load_examples(path, task_type: str) -> list[dict]:
    """One dict per line of a task's jsonl, each checked for the fields its task type reads."""
    path, fields = Path(path), TASK_FIELDS[task_type]
    if not path.is_file():
        raise CoreError(f"{path} is missing: the eval bundle is incomplete; delete it and run again")
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise CoreError(f"{path}:{n}: not valid JSON ({e.msg}); the bundle is damaged, "
                                f"delete it and run again") from None
            if not isinstance(ex, dict) or any(k not in ex for k in fields):
                raise CoreError(f"{path}:{n}: a {task_type} example needs the fields {', '.join(fields)}")
            examples.append(ex)
    return examples


def task_examples(task: Task, bundle_dir, max_per_task: int | None = None) -> list[dict]:
    """The examples CORE scores for `task`: all of them shuffled, then the first max_per_task."""
    examples = load_examples(Path(bundle_dir) / "eval_data" / task.dataset_uri, task.task_type)
    random.Random(SHUFFLE_SEED).shuffle(examples)
    if max_per_task:
        examples = examples[:max_per_task]
    if len(examples) <= task.num_fewshot:
        raise CoreError(f"{task.label} has {len(examples)} examples to score, but its {task.num_fewshot}-shot "
                        f"prompts need {task.num_fewshot + 1} or more: raise max_per_task")
    return examples


# -- prompts -------------------------------------------------------------------------------
class _AllBut(Sequence):
    """range(n) without `skip`: nanochat's [i for i in range(n) if i != skip], without building it.

    random.sample only takes len() and items of its population, so it draws the same indices
    from this as from the list, in O(k) instead of O(n) per example (O(n^2) per task).
    """

    def __init__(self, n: int, skip: int):
        self.n, self.skip = n, skip

    def __len__(self):
        return self.n - 1

    def __getitem__(self, j):
        if not 0 <= j < self.n - 1:
            raise IndexError(j)
        return j + (j >= self.skip)


def fewshot(examples: list, idx: int, k: int) -> list:
    """Example idx's k shots, drawn as nanochat draws them."""
    if k == 0:
        return []
    return [examples[i] for i in random.Random(FEWSHOT_SEED + idx).sample(_AllBut(len(examples), idx), k)]


def render_mc(item: dict, delim: str, shots: list[dict]) -> list[str]:
    """One prompt per choice: the shots (query, delimiter, right answer, blank line), then the query."""
    head = "".join(f"{s['query']}{delim}{s['choices'][s['gold']]}\n\n" for s in shots)
    return [f"{head}{item['query']}{delim}{choice}" for choice in item["choices"]]


def render_schema(item: dict, delim: str, shots: list[dict]) -> list[str]:
    """One prompt per context option, all ending in the same continuation."""
    head = "".join(f"{s['context_options'][s['gold']]}{delim}{s['continuation']}\n\n" for s in shots)
    return [f"{head}{context}{delim}{item['continuation']}" for context in item["context_options"]]


def render_lm(item: dict, delim: str, shots: list[dict]) -> list[str]:
    """[prompt without the continuation, prompt with it]; contexts are stripped, as nanochat's `| trim`.

    nanochat strips the first prompt too: trailing whitespace would merge into the continuation's
    first token and the first prompt's tokens would no longer be a prefix of the second's.
    """
    head = "".join(f"{str(s['context']).strip()}{delim}{s['continuation']}\n\n" for s in shots)
    prompt = f"{head}{str(item['context']).strip()}{delim}"
    return [prompt.strip(), f"{prompt}{item['continuation']}"]


RENDER = {"multiple_choice": render_mc, "schema": render_schema, "language_modeling": render_lm}


def render(task: Task, examples: list[dict], idx: int) -> list[str]:
    """The prompts nanochat builds for example idx of a task's (shuffled, cut) examples."""
    return RENDER[task.task_type](examples[idx], task.delimiter, fewshot(examples, idx, task.num_fewshot))


def common_length(rows: list[list[int]], direction: str = "left") -> int:
    """Length of the prefix ('left') or suffix ('right') that all rows share (nanochat's find_common_length).

    os.path.commonprefix compares only the smallest and the largest row (lexicographic order shares
    their common prefix with every row between): 10x faster than nanochat's loop on 1k-token prompts.
    """
    if direction == "right":
        rows = [r[::-1] for r in rows]
    return len(os.path.commonprefix(rows))


# -- encoding ------------------------------------------------------------------------------
@dataclass
class Example:
    rows: list[list[int]]  # BOS + prompt tokens, one row per candidate
    starts: list[int]      # row[start:end] is what gets scored
    ends: list[int]
    gold: int | None       # right candidate (None for language modeling)
    truncated: bool = False


def spans(task: Task, rows: list[list[int]], where: str) -> tuple[list, list[int], list[int]]:
    """Rows, starts and ends of the scored tokens, found as nanochat finds them."""
    ends = [len(r) for r in rows]
    if task.task_type == "multiple_choice":  # the choices are what follows the common prefix
        return rows, [common_length(rows, "left")] * len(rows), ends
    if task.task_type == "schema":  # the continuation is the common suffix
        suffix = common_length(rows, "right")
        return rows, [e - suffix for e in ends], ends
    without, with_ = rows
    if not (len(without) < len(with_) and with_[:len(without)] == without):
        raise CoreError(f"{where}: the tokens of the prompt are not a prefix of the prompt + continuation "
                        f"(nanochat asserts here); this tokenizer merges across the delimiter")
    return [with_], [len(without)], [len(with_)]


def truncate(ex: Example, max_len: int) -> Example:
    """Keep each row's last max_len tokens; scored positions shift left (at least 1: row[0] predicts)."""
    for i, row in enumerate(ex.rows):
        crop = len(row) - max_len
        if crop > 0:
            ex.rows[i], ex.starts[i], ex.ends[i] = row[crop:], max(ex.starts[i] - crop, 1), ex.ends[i] - crop
            ex.truncated = True
    return ex


def encode(task: Task, examples: list[dict], indices, tokenizer, max_len: int) -> list[Example]:
    """Render, tokenize (one batched call, BOS first) and truncate the examples at `indices`."""
    prompts = [render(task, examples, i) for i in indices]
    flat = tokenizer.encode_batch([p for ps in prompts for p in ps], prepend_bos=True)
    out, k = [], 0
    for i, ps in zip(indices, prompts):
        rows, starts, ends = spans(task, flat[k:k + len(ps)], f"{task.label}, example {i}")
        k += len(ps)
        out.append(truncate(Example(rows, starts, ends, examples[i].get("gold")), max_len))
    return out


# -- scoring -------------------------------------------------------------------------------
@torch.no_grad()
def forward_rows(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nanochat's forward_model: (B, T) loss of predicting x[:, t + 1] at t, and (B, T) argmax.

    The last column predicts nothing (its target wraps around; it is never read). A few rows go
    through the model at a time, so their fp32 logits stay under LOGITS_BYTES.
    """
    per_call = max(1, LOGITS_BYTES // (x.size(1) * model.config.vocab_size * 4))
    losses, predictions = [], []
    for rows in x.split(per_call):
        logits = model(rows).float()
        targets = torch.roll(rows, -1, dims=1)
        losses.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(rows.shape))
        predictions.append(logits.argmax(-1))
    return torch.cat(losses), torch.cat(predictions)


def pack(examples: list[Example], batch_size: int) -> list[list[int]]:
    """Indices of examples grouped so each group has at most batch_size rows (one example may
    exceed it alone); longest first, so rows of similar length share a batch and padding is small."""
    order = sorted(range(len(examples)), key=lambda i: -max(map(len, examples[i].rows)))
    groups, rows = [], batch_size
    for i in order:
        n = len(examples[i].rows)
        if rows + n > batch_size:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += n
    return groups


def score_batch(model, examples: list[Example], task_type: str, pad_id: int, device) -> list[bool]:
    """Is each example right? All its rows go through the model in one right-padded batch."""
    rows = [r for ex in examples for r in ex.rows]
    x = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    losses, predictions = (t.cpu() for t in forward_rows(model, x.to(device)))
    right, b = [], 0
    for ex in examples:
        if task_type == "language_modeling":  # position t predicts token t + 1
            s, e = ex.starts[0], ex.ends[0]
            right.append(torch.equal(predictions[b, s - 1:e - 1], x[b, s:e]))
        else:  # lowest mean loss wins; ties go to the first candidate (list.index of min), as nanochat
            means = [losses[b + j, s - 1:e - 1].mean().item() for j, (s, e) in enumerate(zip(ex.starts, ex.ends))]
            right.append(means.index(min(means)) == ex.gold)
        b += len(ex.rows)
    return right


def evaluate_task(model, tokenizer, task: Task, examples: list[dict], *, batch_size: int = 32,
                  device=None, bar=None) -> tuple[int, int]:
    """(examples right, examples truncated) for one task's (shuffled, cut) examples."""
    device = device or next(model.parameters()).device
    right = truncated = 0
    for c in range(0, len(examples), ENCODE_CHUNK):
        chunk = encode(task, examples, range(c, min(c + ENCODE_CHUNK, len(examples))), tokenizer,
                       model.config.sequence_len)
        truncated += sum(ex.truncated for ex in chunk)
        for group in pack(chunk, batch_size):
            right += sum(score_batch(model, [chunk[i] for i in group], task.task_type, tokenizer.bos_id, device))
            if bar is not None:
                bar.update(len(group))
    return right, truncated


# -- results -------------------------------------------------------------------------------
def centered(accuracy: float, baseline_percent: float) -> float:
    """Accuracy rescaled so random guessing is 0 and perfect is 1 (nanochat's exact arithmetic)."""
    return (accuracy - 0.01 * baseline_percent) / (1.0 - 0.01 * baseline_percent)


@dataclass
class TaskResult:
    task: str
    type: str
    shots: int
    n: int
    accuracy: float
    baseline: float   # as a fraction, like accuracy
    centered: float
    truncated: int    # examples with a row cut to the model's context
    seconds: float


@dataclass
class CoreResult:
    tasks: list[TaskResult]
    seconds: float
    max_per_task: int | None = None

    @property
    def core(self) -> float:
        """CORE: the mean centered accuracy over the tasks."""
        return sum(t.centered for t in self.tasks) / len(self.tasks)

    @property
    def n(self) -> int:
        return sum(t.n for t in self.tasks)

    def table(self):
        import pandas as pd
        return pd.DataFrame([asdict(t) for t in self.tasks])

    def to_csv(self, path) -> Path:
        """The per-task table plus a last row CORE (its `centered`), written atomically."""
        import pandas as pd
        total = {"task": "CORE", "n": self.n, "centered": self.core, "truncated": sum(t.truncated for t in self.tasks),
                 "seconds": self.seconds}
        df = pd.concat([self.table(), pd.DataFrame([total])], ignore_index=True).astype({"shots": "Int64"})
        return paths.atomic_write(path, df.to_csv(index=False))

    def record(self, step: int | None = None, tokens: int | None = None) -> dict:
        """This evaluation as a metrics.jsonl line (tinylab.run.RECORDS["core"]); step and tokens say
        where in training the weights were. Per task: n, accuracy, baseline and centered, in one dict."""
        tasks = {t.task: dict(n=t.n, accuracy=t.accuracy, baseline=t.baseline, centered=t.centered)
                 for t in self.tasks}
        return dict(kind="core", step=step, tokens=tokens, core=self.core, n=self.n, max_per_task=self.max_per_task,
                    truncated=sum(t.truncated for t in self.tasks), seconds=round(self.seconds, 3), tasks=tasks)

    def __repr__(self):
        return f"CoreResult(core={self.core:.4f}, tasks={len(self.tasks)}, n={self.n}, seconds={self.seconds:.1f})"


def check_tokenizer(model, tokenizer) -> None:
    """CORE prompts start with BOS, as every training document does; ids must fit the model."""
    if not isinstance(getattr(tokenizer, "bos_id", None), int) or not hasattr(tokenizer, "encode_batch"):
        raise CoreError(f"CORE needs a tokenizer with a BOS token (bos_id) and encode_batch, which "
                        f"{type(tokenizer).__name__} lacks: use the tinylab Tokenizer saved with the checkpoint")
    n = getattr(tokenizer, "vocab_size", None)
    if n is not None and n > model.config.vocab_size:
        raise CoreError(f"the tokenizer has {n:,} ids but the model only {model.config.vocab_size:,}: "
                        f"use the tokenizer the model was trained with")


def evaluate_core(model, tokenizer, *, bundle_dir=None, max_per_task: int | None = None, batch_size: int = 32,
                  device=None, progress: bool = True) -> CoreResult:
    """CORE of `model`: a tinylab GPT, or anything with model(idx) -> (B, T, vocab) logits and .config.

    bundle_dir: an unpacked eval bundle; None downloads the pinned one to $TINYLAB_HOME/eval_bundle.
    max_per_task: score only the first N shuffled examples of each task (nanochat's --max-per-task).
    batch_size: candidate rows per forward. Batches come in many shapes, so pass the model itself,
    not a torch.compile'd wrapper (it would recompile for each). Runs in bf16 autocast on CUDA.
    Every task file is read and checked before the first forward.
    """
    check_tokenizer(model, tokenizer)
    if max_per_task is not None and max_per_task < 1:
        raise CoreError(f"max_per_task must be at least 1 (or None for every example), got {max_per_task}")
    bundle = Path(bundle_dir) if bundle_dir is not None else ensure_bundle()
    work = [(task, task_examples(task, bundle, max_per_task)) for task in load_tasks(bundle)]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = device_autocast(device)
    t0, results = time.perf_counter(), []
    with autocast, tqdm(total=sum(len(ex) for _, ex in work), unit="ex", desc="CORE", disable=not progress) as bar:
        for task, examples in work:
            bar.set_postfix_str(task.label)
            t1 = time.perf_counter()
            right, truncated = evaluate_task(model, tokenizer, task, examples, batch_size=batch_size,
                                             device=device, bar=bar)
            acc = right / len(examples)
            results.append(TaskResult(task.label, task.task_type, task.num_fewshot, len(examples), acc,
                                      0.01 * task.baseline, centered(acc, task.baseline), truncated,
                                      time.perf_counter() - t1))
    return CoreResult(results, time.perf_counter() - t0, max_per_task)
