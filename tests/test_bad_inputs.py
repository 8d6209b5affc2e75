"""Every bad input to every command line: one `error: ...` line that says what to do, the right exit
status, no traceback, and nothing on disk changed.

The table below is the whole contract; add a CLI to CLIS and its cases to CASES. Each case runs the
CLI in-process through tinylab.errors.cli (a subprocess would cost seconds of torch import each) and
checks:
- the exit status: 2 for bad input (the default), 1 for a run that failed;
- stderr is exactly one line, `error: <message>`, matching the case's pattern and naming an action;
- no traceback anywhere;
- every file under $TINYLAB_HOME/runs is byte-identical afterwards (a failed start may add only the
  `.lock` of a new run).

argv placeholders: {run} is the case's own copy of one shared smoke run (trained once, 4 steps,
checkpoint step_000004) that its setup may damage first; {new} is a run name not used before; {tmp}
is a fresh directory; {home} is $TINYLAB_HOME. Section comments name the group of the reliability issue a case covers.
The behaviours a table cannot show (two processes, kill -9, disk full, orphans, resuming at another
batch, locale and stdin bytes) have their own tests at the end.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tinylab import paths
from tinylab.errors import cli
from tinylab.run import LAYOUT, Run

REPO = Path(__file__).resolve().parents[1]
CLIS = {  # name -> module whose main(argv) is `python -m <module>`
    "calc": "tinylab.calc.__main__", "tokenizer": "tinylab.tokenizer", "data": "tinylab.data",
    "train": "tinylab.train", "complete": "tinylab.complete", "runs": "tinylab.runs",
    "pipeline": "tinylab.pipeline", "bench": "tinylab.bench.__main__", "bench.lm_head": "tinylab.bench.lm_head",
    "export": "tinylab.export",
    "import_nanochat": "tinylab.import_nanochat", "eval": "tinylab.eval", "sweep": "tinylab.sweep",
}
TRAIN = "--preset smoke --no-progress"
RESUME = f"{TRAIN} --run {{run}} --resume --num-iterations 6"
FINEWEB = (f"{TRAIN} --corpus fineweb --run {{new}} --device-batch-size 1 --total-batch-size 128 --eval-tokens 128 "
           f"--num-iterations 1")
CKPT = "checkpoints/step_000004"
ACTION = re.compile(r"\b(use|pass|run|delete|choose|pick|give|lower|set|restore|train|retrain|install|free|point|"
                    r"convert|wait|stop|resume|copy|move|shorten|write|see|update|remove|must|needs?|download|"
                    r"valid|one of)\b")  # a word that tells the user what to do (or what is allowed)


@dataclass
class Case:
    id: str
    cli: str
    argv: str
    match: str                                    # regex the error line must contain
    setup: Callable | None = None                 # setup(ctx) before the "before" snapshot
    code: int = 2
    env: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- setups

def damage(fn):
    """A setup that changes the case's copy of the shared run: fn(run_dir)."""
    return lambda ctx: fn(ctx.run)


def truncate(rel: str):
    def cut(run: Path):
        f = run / rel
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return damage(cut)


def flip(rel: str):
    """Garble a safetensors file in place, as safetensors' own checks cannot see: four bytes of its tensor data
    (past the header) inverted, the length unchanged."""
    def garble(run: Path):
        f = run / rel
        data = bytearray(f.read_bytes())
        middle = (8 + int.from_bytes(data[:8], "little") + len(data)) // 2  # between the header's end and the file's
        data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
        f.write_bytes(data)
    return damage(garble)


def edit_checkpoint_json(fn):
    def edit(run: Path):
        f = run / CKPT / "checkpoint.json"
        f.write_text(json.dumps(fn(json.loads(f.read_text()))))
    return damage(edit)


def other_arch_weights(run: Path):
    from safetensors.torch import save_model
    from tinylab.model import build_model
    from tinylab.presets import get_preset

    save_model(build_model(get_preset("smoke").model.with_knobs(depth=3)), str(run / CKPT / "model.safetensors"))


def swap_tokenizer(ctx):
    shutil.rmtree(ctx.run / "tokenizer")
    shutil.copytree(ctx.other_tokenizer, ctx.run / "tokenizer")


def corrupt_tokenizer(run: Path):
    f = run / "tokenizer" / "tokenizer.tiktoken"
    f.write_bytes(f.read_bytes()[:-200])


def retrained_shared_tokenizer(ctx):
    """The run has no copy of its own, and the shared sample-512 was retrained (another hash)."""
    home = ctx.tmp / "home"
    shutil.copytree(ctx.run, home / "runs" / ctx.run.name)
    shutil.rmtree(home / "runs" / ctx.run.name / "tokenizer")
    shutil.copytree(ctx.other_tokenizer, home / "tokenizer" / "sample-512")
    ctx.monkeypatch.setenv("TINYLAB_HOME", str(home))


def damaged_tokenizer_json(edit):
    """A TINYLAB_HOME whose shared sample-512 tokenizer.json was edited by hand, still JSON: edit(meta) -> new meta."""
    def setup(ctx):
        home = ctx.tmp / "home"
        shutil.copytree(ctx.home / "tokenizer", home / "tokenizer")
        f = home / "tokenizer" / "sample-512" / "tokenizer.json"
        f.write_text(json.dumps(edit(json.loads(f.read_text()))))
        ctx.monkeypatch.setenv("TINYLAB_HOME", str(home))
    return setup


def fineweb_home(ctx) -> Path:
    """A fineweb TINYLAB_HOME: train shard_00000, val shard_00002, tokenizer fineweb-512."""
    home = ctx.tmp / "home"
    shutil.copytree(ctx.fineweb, home)
    ctx.monkeypatch.setenv("TINYLAB_HOME", str(home))
    return home


def tokenizer_of_other_shards(ctx):
    """A fineweb TINYLAB_HOME whose tokenizer records that it read a shard_00000 of another size."""
    home = fineweb_home(ctx)
    f = home / "tokenizer" / "fineweb-512" / "tokenizer.json"
    meta = json.loads(f.read_text())
    meta["stats"]["shards"] = [dict(name="shard_00000.parquet", bytes=1, footer=None)]
    f.write_text(json.dumps(meta))


def no_cuda(ctx):
    """A CPU-only machine, also where the suite runs on a GPU one (the message is the same either way)."""
    import torch
    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def home_is_a_file(ctx):
    (ctx.tmp / "file").write_text("not a directory")
    ctx.monkeypatch.setenv("TINYLAB_HOME", str(ctx.tmp / "file"))


def new_run_is_a_file(ctx):
    paths.runs_dir().joinpath(ctx.new).write_text("not a run")


def in_the_way(name: str):
    """A setup that makes the run's file `name` a folder, or its folder a file (tinylab.run.LAYOUT)."""
    def setup(ctx):
        path = ctx.run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        path.mkdir() if not LAYOUT[name] else path.write_text("in the way")
    return setup


def write_parquet(table, **kw):
    return lambda path: pq.write_table(table, path, **kw)


def truncated_shard(path: Path):
    pq.write_table(pa.table({"text": ["some text"] * 50}), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_row_group(path: Path):
    """A readable footer, but row group 1's page header overwritten (damage inside a page's payload goes
    unnoticed: FineWeb's shards carry no page checksums)."""
    texts = [f"document {i} " + "words and more words " * 30 for i in range(60)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=20, compression="snappy")
    col = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    blob = bytearray(path.read_bytes())
    blob[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(blob))


BAD_SHARDS = {  # the eight kinds of broken parquet shard (group 1)
    "truncated": truncated_shard,
    "garbage": lambda p: p.write_bytes(b"PAR1 this is not a parquet file" * 40),
    "empty-file": lambda p: p.write_bytes(b""),
    "no-text-column": write_parquet(pa.table({"body": ["a document"] * 5})),
    "int64-text": write_parquet(pa.table({"text": list(range(5))})),
    "null-texts": write_parquet(pa.table({"text": ["a document", None, "another"]})),
    "corrupt-row-group": corrupt_row_group,
    "zero-rows": write_parquet(pa.table({"text": pa.array([], pa.string())})),
}


def bad_shard(kind: str, where: str):
    """A fineweb TINYLAB_HOME whose train (tokenizer not trained yet) or val split holds a bad shard."""
    def setup(ctx):
        home = ctx.tmp / "home"
        shutil.copytree(ctx.fineweb, home)  # train shard_00000, val shard_00002, tokenizer fineweb-512
        if where == "train":
            shutil.rmtree(home / "tokenizer")
            if kind == "zero-rows":  # among good shards an empty one is no error; alone it is an empty corpus
                (home / "fineweb" / "shard_00000.parquet").unlink()
        BAD_SHARDS[kind](home / "fineweb" / ("shard_00001.parquet" if where == "train" else "shard_00003.parquet"))
        ctx.monkeypatch.setenv("TINYLAB_HOME", str(home))
    return setup


SHARD_MATCH = {"truncated": "not a readable parquet", "garbage": "not a readable parquet",
               "empty-file": "not a readable parquet", "no-text-column": "no 'text' column",
               "int64-text": "holds int64", "null-texts": "null texts", "corrupt-row-group": "row group 1 is corrupt",
               "zero-rows": "corpus is empty|'val' split"}


def export_target(ctx):
    (ctx.tmp / "out").mkdir()
    (ctx.tmp / "out" / "keep.txt").write_text("someone's file")


# ------------------------------------------------------------------------------- the table

CASES = [
    # -- 1. train: knobs out of range or inconsistent, refused before anything is written
    Case("heads-not-dividing", "train", f"{TRAIN} --run {{new}} --model-dim 100 --n-head 3", "pick n_head from"),
    Case("head-dim-odd", "train", f"{TRAIN} --run {{new}} --head-dim 33", "even head_dim"),
    Case("model-dim-vs-head-dim", "train", f"{TRAIN} --run {{new}} --model-dim 100 --head-dim 64", "multiple of 64"),
    Case("three-head-knobs", "train", f"{TRAIN} --run {{new}} --model-dim 64 --n-head 4 --head-dim 32",
         "give only two"),
    Case("kv-heads-too-many", "train", f"{TRAIN} --run {{new}} --n-kv-head 3", "between 1 and n_head"),
    Case("kv-heads-zero", "train", f"{TRAIN} --run {{new}} --n-kv-head 0", "between 1 and n_head"),
    Case("kv-heads-not-dividing", "train", f"{TRAIN} --run {{new}} --model-dim 96 --n-kv-head 2", "pick n_kv_head"),
    Case("depth-0", "train", f"{TRAIN} --run {{new}} --depth 0", "depth must be >= 1"),
    Case("depth-negative", "train", f"{TRAIN} --run {{new}} --depth=-2", "depth must be >= 1"),
    Case("depth-not-int", "train", f"{TRAIN} --run {{new}} --depth two", "depth='two': give depth an integer"),
    Case("depth-not-whole", "train", f"{TRAIN} --run {{new}} --depth 2.5", "depth='2.5': give depth an integer"),
    Case("vocab-200", "train", f"{TRAIN} --run {{new}} --vocab-size 200", "between 257 and 65,536"),
    Case("vocab-70000", "train", f"{TRAIN} --run {{new}} --vocab-size 70000", "between 257 and 65,536"),
    Case("batch-0", "train", f"{TRAIN} --run {{new}} --device-batch-size 0", "device_batch_size must be >= 1"),
    Case("batch-negative", "train", f"{TRAIN} --run {{new}} --device-batch-size=-5", "device_batch_size must be >= 1"),
    Case("total-batch-0", "train", f"{TRAIN} --run {{new}} --total-batch-size 0", "total_batch_size must be >= 1"),
    Case("seq-len-0", "train", f"{TRAIN} --run {{new}} --seq-len 0", "sequence_len must be >= 1"),
    Case("seq-len-beyond-data", "train", f"{TRAIN} --run {{new}} --seq-len 100000", "lower batch_size or seq_len"),
    Case("seq-len-above-max", "train", f"{TRAIN} --run {{new}} --seq-len 2000000", "sequence_len must be <= 1048576"),
    Case("model-beyond-memory", "train", f"{TRAIN} --run {{new}} --model-dim 1048576", "does not fit in the memory",
         code=1),
    Case("eval-every-0", "train", f"{TRAIN} --run {{new}} --eval-every 0", "eval_every must be >= 1"),
    Case("log-every-0", "train", f"{TRAIN} --run {{new}} --log-every 0", "log_every must be >= 1"),
    Case("iterations-negative", "train", f"{TRAIN} --run {{new}} --num-iterations=-3", "num_iterations must be >= 1"),
    Case("iterations-0", "train", f"{TRAIN} --run {{new}} --num-iterations 0", "num_iterations must be >= 1"),  # 8.
    Case("target-tokens-0", "train", f"{TRAIN} --run {{new}} --target-tokens 0", "target_tokens must be >= 1"),
    Case("eval-tokens-0", "train", f"{TRAIN} --run {{new}} --eval-tokens 0", "eval_tokens must be >= 1"),
    Case("sample-every-negative", "train", f"{TRAIN} --run {{new}} --sample-every=-1", "sample_every must be >= 0"),
    Case("save-every-negative", "train", f"{TRAIN} --run {{new}} --save-every=-1", "save_every must be >= 0"),
    Case("seed-negative", "train", f"{TRAIN} --run {{new}} --seed=-1", "seed must be >= 0"),
    Case("lr-negative", "train", f"{TRAIN} --run {{new}} --matrix-lr=-0.1", "matrix_lr must be >= 0"),
    Case("lr-nan", "train", f"{TRAIN} --run {{new}} --matrix-lr nan", "finite number"),
    Case("lr-inf", "train", f"{TRAIN} --run {{new}} --embedding-lr inf", "finite number"),
    Case("lr-not-number", "train", f"{TRAIN} --run {{new}} --unembedding-lr fast", "invalid float value"),
    Case("tied-lr-negative", "train", f"{TRAIN} --run {{new}} --tied-lr=-1", "tied_lr must be >= 0"),
    Case("weight-decay-negative", "train", f"{TRAIN} --run {{new}} --weight-decay=-1", "weight_decay must be >= 0"),
    Case("grad-clip-negative", "train", f"{TRAIN} --run {{new}} --grad-clip=-1", "grad_clip must be >= 0"),
    Case("warmup-above-1", "train", f"{TRAIN} --run {{new}} --warmup-ratio 1.5", "warmup_ratio must be <= 1"),
    Case("warmdown-negative", "train", f"{TRAIN} --run {{new}} --warmdown-ratio=-0.1", "warmdown_ratio must be >= 0"),
    Case("warmup-plus-warmdown", "train", f"{TRAIN} --run {{new}} --warmup-ratio 0.6 --warmdown-ratio 0.6",
         "would overlap"),
    Case("final-lr-frac-2", "train", f"{TRAIN} --run {{new}} --final-lr-frac 2", "final_lr_frac must be <= 1"),
    Case("corpus-unknown", "train", f"{TRAIN} --run {{new}} --corpus books", "invalid choice: 'books'"),
    Case("corpus-not-downloaded", "train", f"{TRAIN} --run {{new}} --corpus fineweb", "tinylab.data download"),
    Case("num-shards-negative", "train", f"{TRAIN} --run {{new}} --num-shards=-1", "num_shards must be >= 0"),
    Case("max-chars-0", "train", f"{TRAIN} --run {{new}} --max-chars 0", "tokenizer_max_chars must be >= 1"),
    Case("num-shards-1", "train", f"{TRAIN} --run {{new}} --num-shards 1", "num_shards=1 leaves no shard .* give 0"),
    Case("num-shards-beyond-the-sample", "train", f"{TRAIN} --run {{new}} --num-shards 5",
         "num_shards is 5 .* has 4 shard\\(s\\) .*: pass --num-shards 4 or 0"),
    Case("num-shards-beyond-fineweb", "train", f"{FINEWEB} --num-shards 4", "has 2 shard\\(s\\) .* download -n 4`, "
         "or pass --num-shards 2", setup=fineweb_home),
    Case("train-tokenizer-of-other-shards", "train", FINEWEB, "trained on other shards .*shard_00000.parquet had 1 "
         "bytes when it was read .* put back the shards it read .*, or delete", setup=tokenizer_of_other_shards),
    # 3. a shared tokenizer.json edited by hand, still JSON: one line naming the directory to delete
    Case("train-tokenizer-json-a-list", "train", f"{TRAIN} --run {{new}}", "tokenizer.json is damaged .* delete",
         setup=damaged_tokenizer_json(lambda meta: [])),
    Case("train-tokenizer-json-stats-string", "train", f"{TRAIN} --run {{new}}", "'stats' is \"x\", not an object",
         setup=damaged_tokenizer_json(lambda meta: dict(meta, stats="x"))),
    Case("train-tokenizer-json-specials-list", "train", f"{TRAIN} --run {{new}}", "'special_tokens' is .* not an "
         "object", setup=damaged_tokenizer_json(lambda meta: dict(meta, special_tokens=list(meta["special_tokens"])))),
    Case("train-tokenizer-json-pattern-not-regex", "train", f"{TRAIN} --run {{new}}", "pattern is not a regular "
         "expression", setup=damaged_tokenizer_json(lambda meta: dict(meta, pattern="(("))),
    Case("tokenizer-eval-tokenizer-json-damaged", "tokenizer", "eval --no-progress", "is damaged .* delete",
         setup=damaged_tokenizer_json(lambda meta: dict(meta, name=None))),
    Case("preset-unknown", "train", "--preset nope --no-progress --run {new}", "valid presets are: smoke"),
    Case("preset-env-unknown", "train", "--no-progress --run {new}", "unknown preset 'nope'",
         env={"TINYLAB_PRESET": "nope"}),
    Case("knob-misspelt", "train", f"{TRAIN} --run {{new}} --lernrate 1", "unrecognized arguments"),
    Case("device-cuda", "train", f"{TRAIN} --run {{new}} --device cuda", "no usable CUDA GPU", setup=no_cuda),
    Case("device-cuda-1", "train", f"{TRAIN} --run {{new}} --device cuda:1", "no usable CUDA GPU", setup=no_cuda),
    Case("device-bogus", "train", f"{TRAIN} --run {{new}} --device bogus", "unknown device 'bogus'"),
    Case("device-env-bogus", "train", f"{TRAIN} --run {{new}}", "unknown device 'tpu'", env={"TINYLAB_DEVICE": "tpu"}),
    Case("device-mps", "train", f"{TRAIN} --run {{new}} --device mps", "MPS is not available"),
    Case("run-name-parent", "train", f"{TRAIN} --run ../escape", "not a usable run name"),
    Case("run-name-hidden", "train", f"{TRAIN} --run .hidden", "not a usable run name"),
    Case("run-name-deep", "train", f"{TRAIN} --run a/b/c", "not a usable run name"),
    Case("run-name-empty", "train", f"{TRAIN} --run ''", "not a usable run name"),  # 8. "" is not "not given"
    Case("resume-without-preset-or-config", "train", "--no-progress --run {new} --resume",
         "has none .*: pass --preset and the knobs it was started with"),  # not the default preset, silently
    Case("run-name-space", "train", f"{TRAIN} --run 'my run'", "not a usable run name"),
    Case("run-name-sign", "train", f"{TRAIN} --run 'itty;1'", "not a usable run name"),
    Case("run-is-a-file", "train", f"{TRAIN} --run {{new}}", "is a file, not a run directory",
         setup=new_run_is_a_file),
    Case("home-is-a-file", "train", f"{TRAIN} --run {{new}}", "not a directory", setup=home_is_a_file),
    Case("existing-run-without-resume", "train", f"{TRAIN} --run {{run}}", "--resume"),
    # a run's file made a folder, or its folder a file: refused before a resume could read it as missing (a file
    # named checkpoints started the run over, writing config.json and metrics.jsonl anew) or overwrite anything
    *[Case(f"resume-{name}-in-the-way", "train", RESUME, f"runs/resume-{name}-in-the-way/{re.escape(name)} is a "
           f"(file|folder) where tinylab keeps a (file|folder): move it aside", setup=in_the_way(name)) for name in LAYOUT],
    Case("start-checkpoints-in-the-way", "train", f"{TRAIN} --run {{run}} --overwrite --num-iterations 1",
         "checkpoints is a file where tinylab keeps a folder", setup=in_the_way("checkpoints")),

    # -- 1. train on a fineweb corpus with one bad shard: in the train split (hit while training the
    #       tokenizer) and as the validation shard (hit while pre-tokenizing)
    *[Case(f"train-shard-{kind}", "train", FINEWEB, SHARD_MATCH[kind], setup=bad_shard(kind, "train"))
      for kind in BAD_SHARDS],
    *[Case(f"val-shard-{kind}", "train", FINEWEB, SHARD_MATCH[kind], setup=bad_shard(kind, "val"))
      for kind in BAD_SHARDS],

    # -- 1./2. resuming from a damaged checkpoint or with other knobs: refused, config.json untouched
    Case("resume-truncated-model", "train", RESUME, "model.safetensors is damaged", setup=truncate(
        f"{CKPT}/model.safetensors")),
    Case("resume-truncated-optim", "train", RESUME, "optim.safetensors is damaged", setup=truncate(
        f"{CKPT}/optim.safetensors")),
    Case("resume-truncated-meta", "train", RESUME, "checkpoint.json is unreadable", setup=truncate(
        f"{CKPT}/checkpoint.json")),
    Case("resume-missing-optim", "train", RESUME, "optim.safetensors is damaged or missing",
         setup=damage(lambda run: (run / CKPT / "optim.safetensors").unlink())),
    Case("resume-missing-marker", "train", RESUME, "has no checkpoint.json",
         setup=damage(lambda run: (run / CKPT / "checkpoint.json").unlink())),
    Case("resume-garbage-model", "train", RESUME, "model.safetensors is damaged",
         setup=damage(lambda run: (run / CKPT / "model.safetensors").write_bytes(b"\x00" * 999))),
    Case("resume-other-arch-weights", "train", RESUME, "model.safetensors is damaged",
         setup=damage(other_arch_weights)),
    # a data file garbled in place (same length) fails its sha256, whichever command loads it
    *[Case(f"{name}-garbled-{what}", cli_name, argv, f"{what}.safetensors is damaged: its bytes changed since it was "
           f"written .* the run keeps no earlier checkpoint: train it again", setup=flip(f"{CKPT}/{what}.safetensors"))
      for name, cli_name, argv, what in [
          ("resume", "train", RESUME, "model"), ("resume", "train", RESUME, "optim"),
          ("eval", "eval", "probes --run {run} --no-progress", "model"),
          ("complete", "complete", "--run {run} -p hi", "model"),
          ("export", "export", "--run {run} --out {tmp}/x", "model")]],
    Case("resume-hash-field-a-list", "train", RESUME, "checkpoint.json is damaged \\('sha256' is not an object",
         setup=edit_checkpoint_json(lambda meta: dict(meta, sha256=list(meta["sha256"].values())))),
    Case("resume-other-depth", "train", f"{RESUME} --depth 3", "same architecture knobs"),
    Case("resume-other-seq-len", "train", f"{RESUME} --seq-len 64", "same architecture knobs"),
    Case("resume-other-vocab", "train", f"{RESUME} --vocab-size 600", "same architecture knobs"),
    Case("resume-tied", "train", f"{RESUME} --tie-embeddings", "same architecture knobs"),
    Case("resume-below-step", "train", f"{TRAIN} --run {{run}} --resume --num-iterations 3", "--num-iterations >= 4"),
    Case("resume-below-tokens", "train", "--no-progress --run {run} --resume --target-tokens 2048",
         r"already at step 4 \(4,096 tokens\); pass --num-iterations >= 4 \(or --target-tokens >= 4096\)"),
    Case("resume-other-corpus", "train", f"{RESUME} --corpus fineweb", "tinylab.data download"),
    # 8. a run's own tokenizer copy swapped or damaged is noticed by --resume, as by complete
    Case("resume-tokenizer-swapped", "train", RESUME, "trained with tokenizer hash .* copy", setup=swap_tokenizer),
    Case("resume-tokenizer-corrupt", "train", RESUME, "tokenizer copy of run .* is damaged",
         setup=damage(corrupt_tokenizer)),
    Case("resume-tokenizer-meta-gone", "train", RESUME, "tokenizer copy of run .* is damaged",
         setup=damage(lambda run: (run / "tokenizer" / "tokenizer.json").unlink())),
    Case("resume-shared-tokenizer-retrained", "train", RESUME, "trained with tokenizer hash",
         setup=retrained_shared_tokenizer),

    # -- 6. complete
    Case("complete-cuda", "complete", "--run {run} --device cuda -p hi", "no usable CUDA GPU", setup=no_cuda),
    Case("complete-device-bogus", "complete", "--run {run} --device gpu0 -p hi", "unknown device"),
    Case("complete-temperature-nan", "complete", "--run {run} -t nan -p hi", "finite"),
    Case("complete-temperature-inf", "complete", "--run {run} -t inf -p hi", "finite"),
    Case("complete-temperature-negative", "complete", "--run {run} -t=-1 -p hi",
         r"temperature must be 0 \(greedy\) or at least"),
    Case("complete-checkpoint-marker-gone", "complete", "--run {run} -p hi",
         "has no complete checkpoint: .*step_000004 has no checkpoint.json", setup=lambda ctx: (
             ctx.run / CKPT / "checkpoint.json").unlink()),
    Case("complete-temperature-tiny", "complete", "--run {run} -t 1e-45 -p hi",
         r"temperature must be 0 \(greedy\) or at least 1e-06"),
    Case("complete-temperature-word", "complete", "--run {run} -t hot -p hi", "invalid float value"),
    Case("complete-top-k-negative", "complete", "--run {run} -k=-1 -p hi", "top_k must be >= 1"),
    Case("complete-top-p-0", "complete", "--run {run} --top-p 0 -p hi", r"top_p must be in \(0, 1\]"),
    Case("complete-top-p-above-1", "complete", "--run {run} --top-p 1.5 -p hi", r"top_p must be in \(0, 1\]"),
    Case("complete-top-p-nan", "complete", "--run {run} --top-p nan -p hi", "finite"),
    Case("complete-max-tokens-0", "complete", "--run {run} -m 0 -p hi", "max_tokens must be >= 1"),
    Case("complete-max-tokens-negative", "complete", "--run {run} -m=-4 -p hi", "max_tokens must be >= 1"),
    Case("complete-step-missing", "complete", "--run {run} --step 3 -p hi", "no checkpoint at step 3; it has 4"),
    Case("complete-run-missing", "complete", "--run nope -p hi", "no run 'nope'"),
    Case("complete-run-empty", "complete", "--run '' -p hi", "no run ''"),
    Case("complete-checkpoint-missing", "complete", "--checkpoint {tmp}/nowhere -p hi", "no run"),
    Case("complete-run-and-checkpoint", "complete", "--run {run} --checkpoint {run} -p hi", "not allowed with"),
    Case("complete-truncated-model", "complete", "--run {run} -p hi", "model.safetensors is damaged",
         setup=truncate(f"{CKPT}/model.safetensors")),
    Case("complete-truncated-meta", "complete", "--run {run} -p hi", "checkpoint.json is unreadable",
         setup=truncate(f"{CKPT}/checkpoint.json")),
    Case("complete-tokenizer-swapped", "complete", "--run {run} -p hi", "trained with tokenizer hash",
         setup=swap_tokenizer),
    Case("complete-tokenizer-corrupt", "complete", "--run {run} -p hi", "tokenizer copy of run .* is damaged",
         setup=damage(corrupt_tokenizer)),
    Case("complete-prompt-too-long", "complete", f"--run {{run}} -p '{'word ' * 300}'", "shorten the prompt"),

    # -- 7. bench
    Case("bench-loader-preset", "bench", "loader --preset nope", "unknown preset 'nope'"),
    Case("bench-loader-cuda", "bench", "loader --preset smoke --device cuda", "no usable CUDA GPU", setup=no_cuda),
    Case("bench-loader-device-bogus", "bench", "loader --preset smoke --device bogus", "unknown device"),
    Case("bench-loader-two-batches", "bench", "loader --preset smoke --batch-sizes 4,8", "times one device batch"),
    Case("bench-loader-seconds-0", "bench", "loader --preset smoke --seconds 0", "seconds must be a finite"),
    Case("bench-loader-seconds-nan", "bench", "loader --preset smoke --seconds nan", "seconds must be a finite"),
    Case("bench-decode-cuda", "bench", "decode --preset smoke --device cuda", "no usable CUDA GPU", setup=no_cuda),
    Case("bench-decode-streams-0", "bench", "decode --preset smoke --streams 0", "positive integers"),
    Case("bench-decode-tokens-0", "bench", "decode --preset smoke --tokens 0", "tokens must be an integer > 0"),
    Case("bench-decode-prompt-0", "bench", "decode --preset smoke --prompt-tokens 0", "prompt tokens must be an"),
    Case("bench-decode-threads-0", "bench", "decode --preset smoke --threads 0", "threads must be an"),  # 8.
    Case("bench-matmul-no-gpu", "bench", "matmul", "times a training step on a CUDA GPU"),
    Case("bench-steps-0", "bench", "train --steps 0", "steps must be an integer > 0"),
    Case("bench-warmup-negative", "bench", "train --warmup=-1", "warmup steps must be an integer >= 0"),
    Case("bench-gpu-mem-negative", "bench", "fit --gpu-mem-gb=-5", "GiB must be a finite number > 0"),
    Case("bench-peak-tflops-0", "bench", "train --peak-tflops 0", "TFLOP/s must be a finite number > 0"),
    Case("bench-json-no-directory", "bench", "train --json {tmp}/nowhere/b.jsonl", "no directory .*nowhere"),
    Case("bench-json-a-directory", "bench", "train --json {tmp}", "is a directory"),
    Case("bench-lm-head-json-no-directory", "bench.lm_head", "--json {tmp}/nowhere/b.jsonl", "no directory"),
    Case("bench-lm-head-reps-0", "bench.lm_head", "--reps 0", "reps must be an integer > 0"),
    Case("bench-lm-head-kernel", "bench.lm_head", "--kernels auto,fp9", "'fp9' is not one of"),
    Case("bench-relu2-bogus", "bench", "train --relu2 auto,bogus", "'bogus' is not one of auto, torch"),
    Case("bench-loss-bogus", "bench", "train --loss chunky", "'chunky' is not one of chunked"),
    Case("bench-residual-both", "bench", "train --residual both", "'both' is not one of bf16, fp32"),
    Case("bench-unknown", "bench", "everything", "invalid choice"),
    Case("bench-no-what", "bench", "", "required: what"),

    # -- 7./8. calc
    Case("calc-ratio-inf", "calc", "--ratio inf", "ratio must be a finite number > 0"),
    Case("calc-ratio-nan", "calc", "--ratio nan", "ratio must be a finite number > 0"),
    Case("calc-ratio-0", "calc", "--ratio 0", "ratio must be a finite number > 0"),
    Case("calc-ratio-word", "calc", "--ratio lots", "ratio must be a finite number"),
    Case("calc-vocab-100000", "calc", "--vocab-size 100000", "between 257 and 65,536"),
    Case("calc-vocab-100", "calc", "--vocab-size 100", "between 257 and 65,536"),
    Case("calc-gpu-mem-negative", "calc", "--gpu-mem-gb=-5", "GiB must be a finite number > 0"),
    Case("calc-gpu-mem-0", "calc", "--gpu-mem-gb 0", "GiB must be a finite number > 0"),
    Case("calc-gpu-mem-nan", "calc", "--gpu-mem-gb nan", "GiB must be a finite number > 0"),
    Case("calc-mfu-0", "calc", "--mfu 0", "MFU must be"),
    Case("calc-mfu-above-1", "calc", "--mfu 1.5", "MFU must be a finite number > 0 and <= 1"),
    Case("calc-batch-0", "calc", "--batch-sizes 0", "positive integers"),
    Case("calc-batch-empty", "calc", "--batch-sizes ,", "positive integers"),
    Case("calc-batch-word", "calc", "--batch-sizes 8,x", "positive integers"),
    Case("calc-gpu-unknown", "calc", "--gpu 'GTX 9999'", "invalid choice"),
    Case("calc-preset-unknown", "calc", "--preset nope", "valid presets are"),
    Case("calc-depth-0", "calc", "--depth 0", "depth must be >= 1"),
    Case("calc-head-dim-odd", "calc", "--head-dim 33", "even head_dim"),
    Case("calc-heads", "calc", "--model-dim 100 --n-head 3", "pick n_head from"),
    Case("calc-seq-len-huge", "calc", "--seq-len 1000000000000", "sequence_len must be <= 1048576"),

    # -- 7./8. tokenizer
    Case("tokenizer-vocab-0", "tokenizer", "train --no-progress --vocab-size 0", "vocab_size must be >= 1"),
    Case("tokenizer-vocab-100", "tokenizer", "train --no-progress --vocab-size 100", "between 257 and 65,536"),
    Case("tokenizer-vocab-70000", "tokenizer", "train --no-progress --vocab-size 70000", "between 257 and 65,536"),
    Case("tokenizer-max-chars-0", "tokenizer", "train --no-progress --max-chars 0", "tokenizer_max_chars must be"),
    Case("tokenizer-corpus-unknown", "tokenizer", "train --no-progress --corpus books", "invalid choice"),
    Case("tokenizer-preset-unknown", "tokenizer", "train --no-progress --preset nope", "valid presets are"),
    Case("tokenizer-too-little-text", "tokenizer", "train --no-progress --vocab-size 60000 --max-chars 5000 --force",
         "give more text or a smaller vocab_size"),
    Case("tokenizer-eval-max-chars-0", "tokenizer", "eval --no-progress --max-chars 0", "max chars must be an"),
    Case("tokenizer-no-command", "tokenizer", "", "required: cmd"),
    Case("tokenizer-num-shards-beyond", "tokenizer", "train --no-progress --num-shards 6 --force", "has 4 shard"),
    Case("tokenizer-eval-num-shards-beyond", "tokenizer", "eval --no-progress --num-shards 6", "has 4 shard"),
    *[Case(f"tokenizer-shard-{kind}", "tokenizer", "train --no-progress --corpus fineweb", SHARD_MATCH[kind],
           setup=bad_shard(kind, "train")) for kind in BAD_SHARDS],

    # -- 7. pipeline
    Case("pipeline-preset-env", "pipeline", "", "unknown preset 'nope'", env={"TINYLAB_PRESET": "nope"}),
    Case("pipeline-no-match", "pipeline", "zz", "no notebooks matching"),
    Case("pipeline-empty-selector", "pipeline", "''", "an empty notebook selector"),
    Case("pipeline-timeout-0", "pipeline", "--timeout 0", "timeout .seconds. must be an integer > 0"),

    # -- not in the audit: data, runs, export, import_nanochat
    Case("data-info-unknown", "data", "info books", "invalid choice"),
    Case("data-info-not-downloaded", "data", "info fineweb", "tinylab.data download"),
    Case("data-info-num-shards-beyond", "data", "info sample -n 5", "has 4 shard\\(s\\) .* pass --num-shards 4"),
    Case("data-info-num-shards-1", "data", "info sample -n 1", "0 \\(every shard present\\) or at least 2"),
    Case("data-download-1", "data", "download -n 1", "between 2"),
    Case("data-download-too-many", "data", "download -n 99999", "between 2"),
    Case("data-download-workers-0", "data", "download -n 2 --workers 0", "workers must be a positive"),
    Case("data-download-offline", "data", "download -n 2", "HF_HUB_OFFLINE|offline", env={"HF_HUB_OFFLINE": "1"}),
    # a shard there that fails validation is kept (it may be the user's own), and the line says why it is not used
    *[Case(f"data-download-offline-over-{kind}", "data", "download -n 2",
           f"shard_00001.parquet.*{SHARD_MATCH[kind]}.*failed validation and is kept.*HF_HUB_OFFLINE is set",
           setup=bad_shard(kind, "train"), env={"HF_HUB_OFFLINE": "1"})
      for kind in ("truncated", "garbage", "empty-file", "no-text-column", "int64-text")],
    Case("runs-no-command", "runs", "", "required: cmd"),
    Case("runs-plot-missing", "runs", "plot nope -o {tmp}/c.png", "no run 'nope'"),
    Case("runs-plot-x-unknown", "runs", "plot {run} --x speed -o {tmp}/c.png", "invalid choice"),
    Case("runs-plot-smooth-1", "runs", "plot {run} --smooth 1 -o {tmp}/c.png", "smooth"),
    Case("runs-plot-no-config", "runs", "plot {run} -o {tmp}/c.png", "has no config.json",
         setup=damage(lambda run: (run / "config.json").unlink())),
    Case("runs-plot-damaged-metrics", "runs", "plot {run} -o {tmp}/c.png", "line 1 is not valid JSON",
         setup=damage(lambda run: (run / "metrics.jsonl").write_text("{oops\n" + (run / "metrics.jsonl").read_text()))),
    Case("runs-plot-bad-format", "runs", "plot {run} -o {tmp}/c.xyz", "cannot write a .xyz image"),
    Case("export-missing", "export", "--run nope --out {tmp}/x", "no run 'nope'"),
    Case("export-no-out", "export", "--run {run}", "required: --out"),
    Case("export-dtype", "export", "--run {run} --out {tmp}/x --dtype fp8", "invalid choice"),
    Case("export-step", "export", "--run {run} --out {tmp}/x --step 99", "no checkpoint at step 99"),
    Case("export-out-not-empty", "export", "--run {run} --out {tmp}/out", "--force", setup=export_target),
    Case("export-push-offline", "export", "--run {run} --out {tmp}/x --push-to-hub me/tiny", "HF_HUB_OFFLINE",
         env={"HF_HUB_OFFLINE": "1"}),
    Case("export-truncated-model", "export", "--run {run} --out {tmp}/x", "model.safetensors is damaged",
         setup=truncate(f"{CKPT}/model.safetensors")),
    Case("import-missing-dir", "import_nanochat", "{tmp}/nowhere --run {new}", "nowhere"),
    Case("import-empty-dir", "import_nanochat", "{tmp} --run {new}", "no model_<step>.pt"),
    Case("import-no-run", "import_nanochat", "{tmp}", "required: --run"),
    # evaluation (the evaluation issue's bad inputs)
    Case("eval-unknown-kind", "eval", "accuracy --run {run}", "invalid choice: 'accuracy'"),
    Case("eval-no-source", "eval", "probes", "--run --checkpoint is required"),
    Case("eval-missing-run", "eval", "probes --run nope --no-progress", "no run 'nope'"),
    Case("eval-step", "eval", "probes --run {run} --step 99 --no-progress", "no checkpoint at step 99"),
    Case("eval-core-offline", "eval", "core --run {run} --no-progress", "eval_bundle.zip.*HF_HUB_OFFLINE",
         env={"HF_HUB_OFFLINE": "1"}),
    Case("eval-core-not-a-bundle", "eval", "core --run {run} --bundle {tmp} --no-progress", "not a CORE eval bundle"),
    Case("eval-max-per-task-0", "eval", "core --run {run} --max-per-task 0 --no-progress", "max_per_task must be"),
    Case("eval-batch-size-0", "eval", "probes --run {run} --batch-size 0 --no-progress", "batch_size must be"),
    Case("eval-device-bogus", "eval", "probes --run {run} --device bogus --no-progress", "unknown device 'bogus'"),
    Case("eval-truncated-model", "eval", "probes --run {run} --no-progress", "model.safetensors is damaged",
         setup=truncate(f"{CKPT}/model.safetensors")),
    # what records the result is refused before the evaluation runs, not after (which left its table without a record)
    *[Case(f"eval-{name}-in-the-way", "eval", "bpb --run {run} --device cpu --no-progress",
           f"{re.escape(name)} is a (file|folder) where tinylab keeps", setup=in_the_way(name))
      for name in ("metrics.jsonl", ".metrics.lock", "evals", "checkpoints")],
    Case("runs-plot-metrics-in-the-way", "runs", "plot {run} -o {tmp}/c.png", "metrics.jsonl is a folder where",
         setup=in_the_way("metrics.jsonl")),
    Case("runs-plot-config-in-the-way", "runs", "plot {run} -o {tmp}/c.png", "config.json is a folder where",
         setup=in_the_way("config.json")),
    Case("eval-swapped-tokenizer", "eval", "probes --run {run} --no-progress", "tokenizer hash",
         setup=swap_tokenizer),
    # sweeps (the experiments issue's bad inputs: named before any point trains)
    Case("sweep-unknown-knob", "sweep", "s --preset smoke --grid lernrate=1,2 --no-progress", "unknown knob 'lernrate'"),
    Case("sweep-bad-value", "sweep", "s --preset smoke --grid depth=two --no-progress", "give depth an integer"),
    Case("sweep-no-axis-values", "sweep", "s --preset smoke --grid depth --no-progress", "not KNOB=VALUE"),
    Case("sweep-nothing-to-run", "sweep", "{new} --no-progress", "give a spec"),
    Case("sweep-missing-spec", "sweep", "s --spec {tmp}/nope.json --no-progress", "no spec file"),
    Case("sweep-broken-spec", "sweep", "s --spec {tmp}/bad.json --no-progress", "not valid JSON",
         setup=lambda ctx: (ctx.tmp / "bad.json").write_text("{oops")),
    Case("sweep-unknown-preset", "sweep", "s --preset nope --grid depth=2,3 --no-progress", "unknown preset 'nope'"),
    Case("sweep-budget-and-steps", "sweep", "s --preset smoke --grid depth=2 --tokens 1000 --num-iterations 3",
         "drop one of the two"),
    Case("sweep-bad-name", "sweep", "../x --preset smoke --grid depth=2", "not a usable sweep name"),
    Case("sweep-negative-budget", "sweep", "s --preset smoke --grid depth=2 --tokens -5", "must be a positive"),
    Case("sweep-bad-devices", "sweep", "s --preset smoke --grid depth=2 --devices 0,x", "distinct GPU indices"),
    Case("sweep-named-after-a-run", "sweep", "{run} --preset smoke --grid depth=1,2 --no-progress",
         "is a run, not a sweep"),
    Case("sweep-probes-not-a-bool", "sweep", "s --spec {tmp}/spec.json --no-progress", "probes must be true or false",
         setup=lambda ctx: (ctx.tmp / "spec.json").write_text('{"preset": "smoke", "probes": "false"}')),
    Case("sweep-tokens-not-whole", "sweep", "s --spec {tmp}/spec.json --no-progress", "whole number",
         setup=lambda ctx: (ctx.tmp / "spec.json").write_text('{"preset": "smoke", "budget": {"tokens": 1500.7}}')),
    Case("sweep-knob-twice-under-its-alias", "sweep",
         "s --preset smoke --point seq_len=64 sequence_len=128 --point depth=1 --no-progress",
         "sets sequence_len twice \\(seq_len and sequence_len\\): give it once"),
    Case("sweep-knob-flag-and-grid", "sweep", "s --preset smoke --seq-len 64 --grid sequence_len=128,256 --no-progress",
         "sequence_len is set by the spec's knobs .* and by the grid: drop one"),
    Case("sweep-spec-key-twice", "sweep", "s --spec {tmp}/spec.json --no-progress", "gives 'grid' twice: give it once",
         setup=lambda ctx: (ctx.tmp / "spec.json").write_text('{"preset": "smoke", "grid": {"depth": [1, 2]}, '
                                                               '"grid": {"head_dim": [16, 32]}}')),
    Case("sweep-same-effective-batch", "sweep", "s --preset smoke --grid total_batch_size=100,1 --no-progress",
         "are the same configuration once the batch is rounded to whole micro-batches .1,024 tokens per step."),
    Case("sweep-every-point-over-budget", "sweep", "s --preset smoke --grid vocab_size=60000,50000 --flops 4e9",
         "every point of sweep 's' is invalid"),
    # names that would mix a run and a sweep, and outputs that --force would make delete them
    Case("train-into-a-sweep", "train", f"{TRAIN} --run {{new}} --overwrite --num-iterations 1", "is a sweep",
         setup=lambda ctx: (ctx.home / "runs" / ctx.new).mkdir() or (ctx.home / "runs" / ctx.new / "spec.json")
         .write_text("{}")),
    Case("train-inside-a-run", "train", f"{TRAIN} --run {{run}}/x --num-iterations 1", "is a run, so"),
    Case("export-into-its-run", "export", "--run {run} --out {home}/runs/{run} --force", "is a tinylab run"),
    Case("export-over-home", "export", "--run {run} --out {home} --force", "holds \\$TINYLAB_HOME"),
    Case("export-over-the-runs", "export", "--run {run} --out {home}/runs --force", "is \\$TINYLAB_HOME/runs"),
    Case("export-into-the-runs", "export", "--run {run} --out {home}/runs/{new} --force",
         "lies inside \\$TINYLAB_HOME/runs"),
    Case("export-over-the-corpus", "export", "--run {run} --out {home}/fineweb --force", "is \\$TINYLAB_HOME/fineweb"),
    Case("export-over-a-folder-of-runs", "export", "--run {run} --out {tmp} --force",
         "holds the tinylab run or sweep .*/mine/export-over-a-folder-of-runs, which --force would delete",
         setup=lambda ctx: shutil.copytree(ctx.run, ctx.tmp / "mine" / ctx.run.name)),
    Case("resume-at-another-step-size", "train", f"{RESUME} --device-batch-size 3",
         "steps 1,024 tokens at a time, but device_batch_size 3 makes a step of 1,152: pass --resume with "
         "--total-batch-size 1024"),
    Case("train-another-tokenizer-budget", "train", f"{TRAIN} --run {{new}} --max-chars 20000 --num-iterations 1",
         "not on up to 20,000: pass --max-chars 2000000"),
    Case("sweep-tokenizer-budgets-differ", "sweep", "s --preset smoke --grid tokenizer_max_chars=20000,2000000",
         "share tokenizer sample-512 .* but set tokenizer_max_chars to \\[20000, 2000000\\]"),
    Case("sweep-device-not-here", "sweep", "s --preset smoke --grid depth=2 --device cuda:97 --no-progress",
         "cuda:97' asked for"),
    Case("sweep-devices-not-visible", "sweep", "s --preset smoke --grid depth=2 --devices 97 --no-progress",
         "names GPU\\(s\\) 97, but the GPUs visible here are", env={"TINYLAB_DEVICE": "cuda"}),
    Case("train-run-name-too-long", "train", f"{TRAIN} --run {'a' * 300} --num-iterations 1", "too long"),
    Case("calc-ratio-huge", "calc", "--preset smoke --ratio 1e300", "ratio must be"),
    Case("bench-loader-seconds-huge", "bench", "loader --preset smoke --seconds 1e300", "seconds must be"),
    Case("complete-published-run-has-no-weights", "complete", "--run ittybitty-h100 -p hi", "no weights"),
    Case("train-seed-too-big", "train", f"{TRAIN} --run {{new}} --seed 99999999999999999999", "seed must be <="),
    Case("complete-seed-too-big", "complete", "--run {run} -s 99999999999999999999 -p hi", "--seed must be an integer"),
    Case("runs-plot-into-a-directory", "runs", "plot {run} -o {tmp}", "is a directory: give a file name"),
]


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A TINYLAB_HOME with one smoke run `base` (4 steps, checkpoint step_000004), plus the material the
    setups use: a second tokenizer of the same size, and a fineweb corpus template."""
    from tinylab.tokenizer import train_tokenizer
    from tinylab.train import train

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYLAB_HOME", str(home))
        train("smoke", "base", num_iterations=4, progress=False, eval_every=2, eval_tokens=512, sample_every=0)
        texts = pq.read_table(paths.SAMPLE_DIR / "shard_00001.parquet").column("text").to_pylist()
        other = train_tokenizer(texts[::-1], 512, 200_000, name="other", progress=False)
        other.save(home.parent / "other-tokenizer")
        fineweb = home.parent / "fineweb-home"
        (fineweb / "fineweb").mkdir(parents=True)
        pq.write_table(pa.table({"text": texts[:40]}), fineweb / "fineweb" / "shard_00000.parquet", row_group_size=10)
        pq.write_table(pa.table({"text": texts[40:60]}), fineweb / "fineweb" / "shard_00002.parquet")
        train_tokenizer(texts[:40], 512, name="fineweb-512", progress=False).save(fineweb / "tokenizer" / "fineweb-512")
    return SimpleNamespace(home=home, base=home / "runs" / "base", other_tokenizer=home.parent / "other-tokenizer",
                           fineweb=fineweb)


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a CLI in-process as `python -m` would (through errors.cli); (exit status, stdout, stderr)."""
    main = importlib.import_module(CLIS[name]).main
    capsys.readouterr()
    rc = cli(main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


def check_one_error_line(err: str, out: str, match: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr must be one error line:\n{err}"
    assert "Traceback" not in out + err
    assert re.search(match, lines[0]), lines[0]
    assert ACTION.search(lines[0]), f"the message does not say what to do: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case, shared, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    run = shared.home / "runs" / case.id
    if "{run}" in case.argv:
        shutil.copytree(shared.base, run)
    ctx = SimpleNamespace(run=run, new=f"new-{case.id}", tmp=tmp_path, monkeypatch=monkeypatch, **vars(shared))
    try:
        if case.setup:
            case.setup(ctx)
        runs = paths.home() / "runs"
        before = digest(runs)
        argv = shlex.split(case.argv.format(run=case.id, new=ctx.new, tmp=tmp_path, home=shared.home))
        rc, out, err = invoke(case.cli, argv, capsys)
        check_one_error_line(err, out, case.match)
        assert rc == case.code
        after = digest(runs)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert all(k not in before and Path(k).name == ".lock" for k in changed), sorted(changed)
    finally:
        shutil.rmtree(run, ignore_errors=True)
        new = shared.home / "runs" / ctx.new
        shutil.rmtree(new) if new.is_dir() else new.unlink(missing_ok=True)


def test_the_table_is_big_and_covers_every_cli():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    assert {c.cli for c in CASES} == set(CLIS)


# ------------------------------------------------------------------------------- beyond the table

def copy_run(shared, name: str) -> Path:
    shutil.copytree(shared.base, shared.home / "runs" / name)
    return shared.home / "runs" / name


def train_cli(capsys, *argv: str) -> tuple[int, str]:
    """`python -m tinylab.train --preset smoke --no-progress ARGV` in-process; (exit status, stderr)."""
    rc, out, err = invoke("train", [*shlex.split(TRAIN), *argv], capsys)
    return rc, err


HOLD_LOCK = """import sys, time
from tinylab.run import Run
with Run(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_trainer_names_the_first_and_a_killed_ones_lock_is_taken_over(shared, capsys, monkeypatch):
    # 4. the holder takes the lock exactly as train() does (Run.lock), in a process that imports no torch
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "locked")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = digest(run)
        rc, err = train_cli(capsys, "--run", "locked", "--resume", "--num-iterations", "5")
        line = check_one_error_line(err, "", f"being trained by process {holder.pid} on ")
        assert rc == 2 and "wait for it to finish, stop it" in line
        assert digest(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs, the lock file stays behind
        holder.wait(timeout=30)
    assert f"process {holder.pid} " in (run / ".lock").read_text()  # stale: names a dead process
    rc, err = train_cli(capsys, "--run", "locked", "--resume", "--num-iterations", "5", "--eval-every", "5",
                        "--eval-tokens", "512", "--sample-every", "0")
    assert rc == 0, err
    assert f"process {os.getpid()} " in (run / ".lock").read_text()
    shutil.rmtree(run)


def test_orphans_of_a_killed_save_are_cleaned_on_the_next_start(shared, capsys, monkeypatch):
    # 5. what a kill -9 in the middle of checkpoint.save_checkpoint / paths.atomic_write leaves behind
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "orphans")
    orphans = [run / "checkpoints" / ".tmp-step_000006-k1ll3d", run / "checkpoints" / ".old.tmp-step_000004-x",
               run / ".config.json.a1b2.tmp", run / "tokenizer" / ".tokenizer.json.c3d4.tmp"]
    for p in orphans[:2]:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"half a checkpoint")
    for p in orphans[2:]:
        p.write_text("half a file")
    rc, err = train_cli(capsys, "--run", "orphans", "--resume", "--num-iterations", "5", "--eval-every", "5",
                        "--eval-tokens", "512", "--sample-every", "0")
    assert rc == 0, err
    assert not any(p.exists() for p in orphans)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000005"]
    shutil.rmtree(run)


def enospc_in_safetensors(*args, **kwargs):
    """What safetensors raises on a full disk (seen on a 3 MB tmpfs): its own error, not an OSError."""
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def enospc_in_python(path, obj):
    """What paths.atomic_write's f.write raises on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("where", ["safetensors", "checkpoint.json"])
def test_disk_full_while_saving_is_one_line_and_loses_nothing(where, shared, capsys, monkeypatch):
    # 5. a full disk during the step-6 save; the mocked failure is the one a real full disk gives
    import safetensors.torch

    from tinylab import checkpoint

    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, f"full-{where.replace('.', '-')}")
    kept = digest(run / CKPT)
    args = ["--num-iterations", "6", "--eval-every", "6", "--eval-tokens", "512", "--sample-every", "0",
            "--log-every", "1"]
    with monkeypatch.context() as m:
        if where == "safetensors":
            m.setattr(safetensors.torch, "serialize_file", enospc_in_safetensors)
        else:
            m.setattr(checkpoint, "write_json", enospc_in_python)  # checkpoint.json, written last
        rc, err = train_cli(capsys, "--run", run.name, "--resume", *args)
    line = check_one_error_line(err, "", "the disk is full .*free some space and run the command again")
    assert rc == 1 and ".tmp-step_000006" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000004"]  # no partial save left
    assert digest(run / CKPT) == kept
    rc, err = train_cli(capsys, "--run", run.name, "--resume", *args)
    assert rc == 0, err
    assert [s for s, _ in train_losses(run)] == [4, 5, 6]  # the failed attempt's lines 5, 6 dropped, not repeated
    shutil.rmtree(run)


TRAIN_STEP = importlib.import_module("tinylab.train").train_step


def record_steps(monkeypatch, fail_at: int | None = None) -> list[torch.Tensor]:
    """The input rows of every optimizer step, all micro-batches together (B_total, T), in order.

    fail_at=k: the k-th step raises torch.OutOfMemoryError before it runs, like CUDA would."""
    from tinylab import train as T

    steps, real = [], TRAIN_STEP  # the real one, not an earlier spy

    def spy(net, optimizers, batches, grad_accum, **kw):
        if len(steps) + 1 == fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen = []

        class Recorder:
            def __next__(self):
                x, y = next(batches)
                seen.append(x.clone())
                return x, y
        loss = real(net, optimizers, Recorder(), grad_accum, **kw)
        steps.append(torch.cat(seen))
        return loss

    monkeypatch.setattr(T, "train_step", spy)
    return steps


def train_losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every train line of metrics.jsonl, in file order."""
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def test_out_of_memory_then_resume_at_half_the_batch_continues_the_same_token_stream(shared, capsys, monkeypatch):
    # 2./3. batch 8 for 6 steps, against batch 8 stopped by an out-of-memory error in step 5 (checkpoint at
    # step 3) and resumed at batch 4: the same 1,024 tokens per step, now in two micro-batches
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    knobs = ["--num-iterations", "6", "--eval-every", "3", "--eval-tokens", "512", "--sample-every", "0",
             "--log-every", "1"]
    full = record_steps(monkeypatch)
    assert train_cli(capsys, "--run", "b8", *knobs)[0] == 0
    cut = record_steps(monkeypatch, fail_at=5)
    rc, err = train_cli(capsys, "--run", "b8-4", *knobs)
    line = check_one_error_line(err, "", r"out of memory at device batch 8 × 128 .*--resume with --total-batch-size 1024 and a "
                                r"--device-batch-size that divides its 8 rows per step \(e.g. 4, 2, 1\)")
    assert rc == 1 and "--resume" in line and line.endswith("step_000003")
    resumed = record_steps(monkeypatch)
    rc, err = train_cli(capsys, "--run", "b8-4", "--resume", "--device-batch-size", "4", *knobs)
    assert rc == 0, err
    a, b = shared.home / "runs" / "b8", shared.home / "runs" / "b8-4"
    assert [s.shape for s in resumed] == [(8, 128)] * 3  # steps 4-6 again, each two micro-batches of 4
    assert len(cut) == 4 and torch.equal(cut[3], resumed[0])  # step 4 ran before the error, and again after it
    assert len(full) == 6 and all(torch.equal(x, y) for x, y in zip(full, cut[:3] + resumed))  # the same tokens
    la, lb = train_losses(a), train_losses(b)
    assert [s for s, _ in la] == [s for s, _ in lb] == [1, 2, 3, 4, 5, 6]
    assert max(abs(x - y) for (_, x), (_, y) in zip(la, lb)) < 1e-5  # fp32: mean of 8 rows vs mean of 2 means of 4
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["batch"]["device_batch_size"] == 4 and cfg["derived"]["grad_accum"] == 2
    assert cfg["derived"]["total_batch_size"] == 1024
    meta = [json.loads((r / "checkpoints" / "step_000006" / "checkpoint.json").read_text()) for r in (a, b)]
    assert meta[0]["loader"] == meta[1]["loader"] and meta[0]["loader"]["rows"] == 6 * 8
    assert meta[1]["val_bpb"] == pytest.approx(meta[0]["val_bpb"], abs=1e-5)


def test_resume_with_another_batch_and_more_steps_reads_on_from_the_checkpoint(shared, capsys, monkeypatch):
    # 2. `train --run r --resume --num-iterations N --device-batch-size 4` on a run trained at batch 8
    from tinylab.loader import STATE_FORMAT, token_batches
    from tinylab.presets import get_preset
    from tinylab.tokenizer import get_tokenizer

    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "rebatch")
    steps = record_steps(monkeypatch)
    rc, err = train_cli(capsys, "--run", "rebatch", "--resume", "--num-iterations", "6", "--device-batch-size", "4",
                        "--eval-every", "6", "--eval-tokens", "512", "--sample-every", "0")
    assert rc == 0, err
    smoke = get_preset("smoke")
    stream = token_batches(smoke, get_tokenizer(smoke), state=dict(format=STATE_FORMAT, rows=4 * 8), progress=False)
    assert [torch.equal(s, next(stream)[0]) for s in steps] == [True, True]  # rows 32..47: where step 4 stopped
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["batch"]["device_batch_size"], cfg["derived"]["num_iterations"]) == (4, 6)
    shutil.rmtree(run)


def test_resume_without_preset_continues_the_run_as_it_was_configured(shared, capsys, monkeypatch):
    # 3. `train --run r --resume`, with $TINYLAB_PRESET naming another architecture: the run's own config.json decides
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    monkeypatch.setenv("TINYLAB_PRESET", "ittybitty")
    run = copy_run(shared, "own-config")
    before = json.loads((run / "config.json").read_text())
    rc, _, err = invoke("train", ["--no-progress", "--run", "own-config", "--resume", "--num-iterations", "6"], capsys)
    assert rc == 0, err
    after = json.loads((run / "config.json").read_text())
    assert after["preset"] == "smoke" and after["model"] == before["model"] and after["derived"]["num_iterations"] == 6
    assert {k: after["eval"][k] for k in ("eval_every", "eval_tokens", "sample_every")} == \
        {k: before["eval"][k] for k in ("eval_every", "eval_tokens", "sample_every")}  # its own, not the preset's
    shutil.rmtree(run)


def test_resume_with_target_tokens_trains_to_them_though_the_run_was_started_with_num_iterations(shared, capsys,
                                                                                                 monkeypatch):
    """base was started with num_iterations=4 (as a sweep's points are): --target-tokens on its resume decides the
    length, instead of the saved num_iterations deciding while config.json records the new target unused."""
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "longer")
    rc, _, err = invoke("train", ["--no-progress", "--run", "longer", "--resume", "--target-tokens", str(6 * 1024),
                                  "--eval-every", "6", "--eval-tokens", "512", "--sample-every", "0"], capsys)
    assert rc == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["loop"]["target_tokens"], cfg["loop"]["num_iterations"], cfg["derived"]["num_iterations"]) == \
        (6 * 1024, None, 6)
    assert [p.name for p in Run(run).checkpoints()] == ["step_000006"]
    assert max(r["step"] for r in Run(run).metrics.read() if r["kind"] == "train") == 6
    shutil.rmtree(run)


def test_a_resumes_length_flags_decide_over_the_runs_own():
    from tinylab.launch import resumed_length
    from tinylab.presets import get_preset

    cfg = get_preset("smoke").override(num_iterations=4, target_tokens=4096)  # as a sweep's point is started
    assert resumed_length(cfg, {"target_tokens": 6144}).loop.num_iterations is None  # the target decides
    assert resumed_length(cfg, {"target_tokens": 6144, "num_iterations": 6}) == cfg  # num_iterations, as on any start
    assert resumed_length(cfg, {"matrix_lr": 0.01}) == cfg  # no length flag: the run's own


def test_resume_without_preset_of_a_config_this_version_cannot_read_says_what_to_pass(shared, capsys, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "old-knobs")
    cfg = json.loads((run / "config.json").read_text())
    cfg["loop"]["retired_knob"] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    rc, _, err = invoke("train", ["--no-progress", "--run", "old-knobs", "--resume"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "retired_knob" in err and "pass --preset" in err, err
    rc, _, err = invoke("train", ["--preset", "smoke", "--no-progress", "--run", "old-knobs", "--resume",
                                  "--num-iterations", "6"], capsys)
    assert rc == 0, err  # the advice works
    shutil.rmtree(run)


def test_a_swapped_tokenizer_copy_stops_resume_and_the_advice_given_works(shared, capsys, monkeypatch):
    # 8. train --resume notices a run's own tokenizer copy that was replaced, as complete does
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "swapped")
    swap_tokenizer(SimpleNamespace(run=run, other_tokenizer=shared.other_tokenizer))
    before = digest(run)
    args = ["--run", "swapped", "--resume", "--num-iterations", "5", "--eval-every", "5", "--eval-tokens", "512",
            "--sample-every", "0"]
    rc, err = train_cli(capsys, *args)
    line = check_one_error_line(err, "", "trained with tokenizer hash .* copy .* has .*`cp -r ")
    assert rc == 2 and digest(run) == before  # config.json, metrics and checkpoint untouched
    cp = re.search(r"`cp -r (\S+) (\S+)`", line)  # follow the advice: the shared tokenizer is the same one
    shutil.rmtree(cp.group(2))
    shutil.copytree(cp.group(1), cp.group(2))
    rc, err = train_cli(capsys, *args)
    assert rc == 0, err
    shutil.rmtree(run)


def test_complete_reports_input_that_is_not_utf8_in_one_line(shared):
    # 6. bytes that are not UTF-8 on stdin under a strict decoder: needs a real process and pipe
    r = subprocess.run([sys.executable, "-m", "tinylab.complete", "--run", "base", "-m", "2"],
                       input=b"caf\xe9 \xff\xfe\n###\n", capture_output=True, timeout=120, cwd=REPO,
                       env=dict(os.environ, TINYLAB_HOME=str(shared.home), PYTHONIOENCODING="utf-8:strict",
                                PYTHONPATH=str(REPO)))
    err = r.stderr.decode()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and "Traceback" not in err, err
    assert errors == [err.strip().splitlines()[-1]]  # after the banner of the piped loop, one error line
    assert "not valid UTF-8" in errors[0] and "PYTHONIOENCODING=utf-8:surrogateescape" in errors[0]


def test_complete_reports_a_terminal_that_cannot_show_the_text(shared, capsys, monkeypatch):
    # 6. an ASCII-only terminal (LANG=C, strict): the echoed prompt cannot be written
    from tinylab import complete

    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    err = io.StringIO()
    rc = complete.main(["--run", "base", "-m", "2"], stdin=io.StringIO("caf\u00e9\n###\n"), stdout=out, stderr=err)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and "UTF-8 locale" in errors[0]


def test_a_folder_where_a_file_goes_is_one_line(capsys):
    """A new run's .lock made a folder by hand: one line, no traceback."""
    (paths.home() / "runs" / "lockdir" / ".lock").mkdir(parents=True)
    rc, err = train_cli(capsys, "--run", "lockdir", "--num-iterations", "1")
    assert rc == 2 and check_one_error_line(err, "", "lockdir/.lock is a folder where tinylab keeps a file: move it "
                                                     "aside")


def test_runs_list_shows_a_run_with_a_folder_in_the_way_as_its_problem(shared, capsys, monkeypatch):
    monkeypatch.setenv("TINYLAB_HOME", str(shared.home))
    run = copy_run(shared, "listed")
    try:
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").mkdir()
        rc, out, err = invoke("runs", ["list"], capsys)
        assert rc == 0 and "Traceback" not in err
        row = next(line for line in out.splitlines() if line.startswith("listed "))
        assert "unreadable" in row and "metrics.jsonl is a folder" in row  # and the other runs are listed
        assert any(line.startswith("base ") for line in out.splitlines())
    finally:
        shutil.rmtree(run)


def test_explain_names_the_file_on_the_way_to_a_path(tmp_path):
    """ENOTDIR names only the path asked for; the file to move aside is one of the folders on the way to it."""
    from tinylab.errors import explain

    (tmp_path / "runs").write_text("a file where a folder goes")
    asked = tmp_path / "runs" / "r" / "config.json"
    message = str(explain(OSError(errno.ENOTDIR, "Not a directory", str(asked))))
    assert message.startswith(f"{tmp_path / 'runs'} is a file, not a directory: move it aside")


INTERRUPT_AT_IMPORT = """import os, signal, sys
AT = os.environ.pop("INTERRUPT_AT", None)  # popped: the data child that train starts early runs this file too


class Interrupt:  # a meta path finder that sends this process a real SIGINT as `AT` starts to import, then steps aside
    def find_spec(self, name, path=None, target=None):
        if name == AT:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


if AT:
    # as in a terminal: a shell's background job (make test &) starts with SIGINT ignored, and Python keeps that
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.meta_path.insert(0, Interrupt())
"""


@pytest.mark.parametrize("command, at", [("tinylab.train --preset smoke --run early --no-progress", "torch"),
                                         ("tinylab.train --preset smoke --run early --no-progress", "tinylab.launch"),
                                         ("tinylab.runs list", "pandas"), ("tinylab.eval probes --run x", "torch")])
def test_ctrl_c_while_a_command_imports_exits_130_without_a_traceback(tmp_path, command, at):
    """Ctrl-C before cli() runs main (torch's import takes seconds) is cli()'s one line and status 130. The SIGINT is
    sent by the process itself as `at` starts to import (a sitecustomize on its path), so no timing is involved."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(INTERRUPT_AT_IMPORT)
    env = dict(os.environ, INTERRUPT_AT=at, TINYLAB_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    p = subprocess.run([sys.executable, "-m", *command.split()], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert (p.returncode, p.stderr.strip(), p.stdout) == (130, "interrupted", "")
    assert not (tmp_path / "home" / "runs").exists()  # nothing was written


def test_importing_tinylab_outside_a_command_leaves_ctrl_c_alone():
    """A notebook or script that imports tinylab keeps Python's own handling of KeyboardInterrupt."""
    code = "import sys, tinylab.train; print(sys.excepthook is sys.__excepthook__)"
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.stdout.strip() == "True", p.stderr

