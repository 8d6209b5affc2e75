"""A training run on disk, owned by one class: `Run`, a directory runs/<name>/.

    config.json        the run's knobs by group and what was derived from them; written once a
                       start or resume has succeeded, never by a failed one
    metrics.jsonl      one JSON object per line, `kind` = train | eval | sample | core | probes;
                       RECORDS below is the one schema the writer and every reader use
    tokenizer/         the run's own copy of its tokenizer
    evals/<kind>-step_NNNNNN.csv   the table of an evaluation of that step's checkpoint (tinylab.eval)
    checkpoints/step_NNNNNN/   complete checkpoints (format: tinylab.checkpoint); hidden
                       .tmp-*/.old-* directories are saves that a kill interrupted
    .lock              held (flock) by the process that is training the run
    .metrics.lock      held (flock) for the moment metrics.jsonl is appended to or cut back

Lookup (`Run.find`), the one rule every command and notebook uses: a path to a run directory;
else a name under $TINYLAB_HOME/runs/ (sweep points are "<sweep>/<point>"); else a name under the
repository's docs/runs/ (published runs), then docs/sweeps/ (published sweeps' points, "<sweep>/<point>");
"docs/runs/<name>" or "docs/sweeps/<sweep>/<point>" picks the published one when a local run has the
same name. Sweeps themselves (a directory holding spec.json and its points) follow the same rule:
`find_sweep`. Nothing else in tinylab builds a run path.

This module imports no torch and no pandas: the trainer, the notebooks' readers and the CLIs
all use it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

from . import paths
from .errors import TinylabError

FORMAT = 2            # config.json format written; 1 (before knob groups) is still read
CHECKPOINT_MARKER = "checkpoint.json"   # written last into a checkpoint: its presence means complete
DOCS_RUNS = paths.REPO / "docs" / "runs"
DOCS_SWEEPS = paths.REPO / "docs" / "sweeps"
PUBLISHED_PREFIX = "docs/runs/"
SWEEPS_PREFIX = "docs/sweeps/"
SWEEP_SPEC = "spec.json"   # marks a directory of runs/ (or docs/sweeps/) as a sweep (tinylab.sweep)
MAX_NAME_BYTES = 200       # of one part of a run name: a directory name (filesystems stop at 255 bytes)
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # a run's, a sweep's or a point's name: safe in a shell, a
                                                       # CSV cell and a path, on every OS (a point's may hold 1e+20)
RECORDS = {  # kind -> fields of a metrics.jsonl record (besides "kind")
    "train": ("step", "tokens", "flops", "loss", "lr", "tok_per_s", "mfu", "mem_gb", "elapsed"),
    "eval": ("step", "tokens", "flops", "val_bpb", "elapsed"),
    "sample": ("step", "text"),
    # one evaluation of a checkpoint (tinylab.eval, or training's core_every / probes_every): per-task and
    # per-phenomenon numbers sit in one dict field, so the field list stays fixed whatever the bundle holds
    "core": ("step", "tokens", "core", "n", "max_per_task", "truncated", "seconds", "tasks"),
    "probes": ("step", "tokens", "accuracy", "n", "seconds", "phenomena"),
}


LAYOUT = {  # what a run directory holds (the module docstring), by name -> a folder (True) or a file (False)
    "config.json": False, "metrics.jsonl": False, ".metrics.lock": False, ".lock": False,
    "checkpoints": True, "tokenizer": True, "evals": True,
}


class RunError(TinylabError, ValueError):
    """A run that cannot be found, read or used; the message names the run and what to do."""


def check_kind(path: Path, folder: bool) -> None:
    """Refuse a file where tinylab keeps a folder, or a folder where it keeps a file (made by hand, or by a tool gone
    wrong), before anything reads or writes past it: otherwise a resume that finds no checkpoints/ folder would start
    the run over, or an evaluation would compute for minutes and then fail to record its result."""
    if path.exists() and path.is_dir() != folder:
        what, wants = ("a file", "folder") if folder else ("a folder", "file")
        raise RunError(f"{path} is {what} where tinylab keeps a {wants}: move it aside (rename it) and run the "
                       f"command again; nothing of the run was changed")


class MetricsLog:
    """metrics.jsonl: append records of a known kind, read them back, cut back to a checkpoint's offset.

    Two processes may write one log: the trainer, and `python -m tinylab.eval` evaluating a checkpoint
    of the same run. Every change happens under an flock on a sidecar file (.metrics.lock; the log
    itself is replaced by truncate, so it cannot carry the lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(".metrics.lock")

    @contextmanager
    def locked(self):
        import fcntl

        check_kind(self.path, False)
        check_kind(self.lock_path, False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def write(self, kind: str, **fields) -> dict:
        expected = RECORDS.get(kind)
        if expected is None or set(fields) != set(expected):
            raise RunError(f"a {kind!r} metrics record needs the fields {expected}, got {sorted(fields)}")
        record = {"kind": kind, **{k: fields[k] for k in expected}}
        with self.locked(), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, nbytes: int, keep_through_step: int | None = None) -> None:
        """Drop what was logged after a checkpoint (its byte offset), except records of a step up to
        `keep_through_step` (the checkpoint's step).

        The resumed loop re-logs everything it does after the checkpoint's step, so those lines must go.
        A record after the offset about an earlier step, or the checkpoint's own, was not written by that
        loop (the trainer logs a step's evaluations before saving it): it is an evaluation of a checkpoint
        (tinylab.eval) that nothing would write again. It is kept, right after the offset, and the log is
        replaced atomically, so a crash leaves the old log or the new one."""
        with self.locked():
            if not self.path.exists():
                return
            data = self.path.read_bytes()
            head, tail = data[:nbytes], data[nbytes:].splitlines()
            if head and not head.endswith(b"\n"):  # the log was cut short of the offset mid-line (a crash, a full
                head = head[:head.rfind(b"\n") + 1]  # disk): its partial last line goes, so no record is glued on
            keep = keep_through_step is not None
            kept = [line + b"\n" for line in tail if keep and _at_or_before(line, keep_through_step)]
            if kept:
                paths.atomic_write(self.path, head + b"".join(kept))
            else:
                with open(self.path, "r+") as f:
                    f.truncate(len(head))

    def read(self) -> list[dict]:
        check_kind(self.path, False)  # a RunError, which `runs list` shows as the run's problem, not an OSError
        return read_jsonl(self.path) if self.path.exists() else []


def _at_or_before(line: bytes, step: int) -> bool:
    """Is this metrics line a record of `step` or earlier? (No for a partial line that does not parse.)"""
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step


def read_jsonl(path: Path) -> list[dict]:
    """JSON objects of a .jsonl file; a partial last line (writer mid-line) is skipped silently.

    A line that does not parse is only "partial" when it is the last one and has no newline
    yet; anywhere else it is damage and raises RunError with its line number."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")  # complete files end with ""
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # unterminated last line: still being written
                break
            raise RunError(f"{path}, line {i} is not valid JSON ({e.msg}): the file is damaged; "
                           f"delete that line (the rest of the run is kept) and load again") from None
        if not isinstance(obj, dict):
            raise RunError(f"{path}, line {i} is not a JSON object: the file is damaged; delete that line")
        records.append(obj)
    return records


class Run:
    """The directory of one run; see the module docstring for its layout."""

    def __init__(self, directory: Path, name: str | None = None):
        self.dir = Path(directory)
        self.name = name or self.dir.name
        self.config_path = self.dir / "config.json"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.tokenizer_dir = self.dir / "tokenizer"
        self.evals_dir = self.dir / "evals"
        self.metrics = MetricsLog(self.dir / "metrics.jsonl")

    def __repr__(self):
        return f"Run({self.name!r}, {str(self.dir)!r})"

    # -- where runs are ------------------------------------------------------------------
    @classmethod
    def at(cls, name: str) -> "Run":
        """The writable run `name` under $TINYLAB_HOME/runs/ (it need not exist yet)."""
        name = os.fspath(name) if isinstance(name, os.PathLike) else name
        if not isinstance(name, str):
            raise RunError(f"a run name is a string, e.g. 'itty-1'; got {name!r}")
        parts = name.split("/")
        if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
            raise RunError(f"run name {name[:40]!r}... is too long for a directory name: use at most "
                           f"{MAX_NAME_BYTES} bytes per part")
        if not is_run_name(name):
            raise RunError(f"{name!r} is not a usable run name: use letters, digits, '.', '-' and '_' (not first), and "
                           f"at most one '/' (for sweep points), e.g. itty-1 or mysweep/tied")
        runs = paths.home() / "runs"
        if is_sweep_dir(runs / name):
            raise RunError(f"runs/{name} is a sweep (its points are runs {name}/<point>): give the run another name")
        if len(parts) == 2 and _is_run_dir(runs / parts[0]):
            raise RunError(f"runs/{parts[0]} is a run, so {name!r} cannot live inside it: give the run a name of "
                           f"its own (a name with '/' is a point of a sweep)")
        return cls(runs / name, name)

    @staticmethod
    def published_roots() -> dict[str, Path]:
        """The repository's published runs and sweeps, by the prefix that names them explicitly."""
        return {PUBLISHED_PREFIX: DOCS_RUNS, SWEEPS_PREFIX: DOCS_SWEEPS}

    @classmethod
    def roots(cls) -> list[Path]:
        """Where runs are looked for, in order: $TINYLAB_HOME/runs, then docs/runs, then docs/sweeps."""
        return [paths.home() / "runs"] + [root for root in cls.published_roots().values() if root.is_dir()]

    @classmethod
    def all(cls) -> dict[str, "Run"]:
        """Every run found, by name; a published name that is also local is listed with its prefix
        ("docs/runs/<name>", "docs/sweeps/<sweep>/<point>")."""
        prefixes = {root: prefix for prefix, root in cls.published_roots().items()}
        found: dict[str, Run] = {}
        for root in cls.roots():
            for d in _run_dirs(root):
                name = d.relative_to(root).as_posix()
                if name in found:
                    name = prefixes[root] + name
                found[name] = cls(d, name)
        return found

    @classmethod
    def find(cls, run: "str | Path | Run") -> "Run":
        """The run named or pointed at by `run` (the module docstring gives the rule)."""
        if isinstance(run, Run):
            return run
        text = str(run)
        for prefix, root in cls.published_roots().items():
            if text.startswith(prefix) and _is_run_dir(root / text[len(prefix):]):
                return cls(root / text[len(prefix):], text)
        p = expand(text)
        if p.is_dir() and _is_run_dir(p):
            return cls(p)
        for root in cls.roots():
            if (root / text).is_dir() and _is_run_dir(root / text):
                return cls(root / text, text)
        raise cls.not_found(text)

    @classmethod
    def not_found(cls, text: str) -> RunError:
        """Why `text` names no run, with a way on that fits it: a sweep's points for a sweep, no training command
        for a path (the trainer writes only under $TINYLAB_HOME/runs), the trainer's command for a name."""
        p, sweep = expand(text), _sweep_named(text)
        if sweep is not None:
            points = [f"{text}/{d.name}" for d in sorted(sweep.iterdir()) if _is_run_dir(d)]
            listed = f"e.g. {', '.join(points[:3])}{', ...' * (len(points) > 3)}" if points else "none trained yet"
            return RunError(f"{text!r} is a sweep ({sweep}), not a run: pass one of its points, '{text}/<point>' "
                            f"({listed}); {_sweep_commands(sweep, text)}")
        if text and p.is_dir():  # a directory, but not a run's (e.g. a run's checkpoints/ folder)
            inside = next((d for d in p.resolve().parents if _is_run_dir(d)), None)
            return RunError(f"{text} is a directory but not a run (a run's holds tinylab's config.json, metrics.jsonl "
                            f"or checkpoints/){f': pass its run, {inside}' if inside else ''}")
        known = ", ".join(cls.all()) or "none yet"
        missing = f"no run {text!r} in {' or '.join(map(str, cls.roots()))} (runs found: {known})"
        if not is_run_name(text):  # a path, or no usable name: no command can train a run of this name
            there = ("" if not (os.sep in text or text.startswith((".", "~"))) else
                     f", and as a path: {p} is a file, not a run directory" if p.exists() else
                     f", and as a path: nothing at {p.absolute()}")
            return RunError(f"{missing}{there}; pass a run name or the path of a run directory")
        point_of = _sweep_named(text.split("/")[0]) if "/" in text else None  # "<sweep>/<point>": the sweep trains it
        way = (f"; {text.split('/')[0]} is a sweep: {_sweep_commands(point_of, text.split('/')[0])}" if point_of
               else f", or train it with `python -m tinylab.train --run {text}`")
        return RunError(f"{missing}; pass a run name or the path of a run directory{way}")

    @property
    def published(self) -> bool:
        """Shipped in the repository: in docs/runs/, or a point of a sweep in docs/sweeps/."""
        d = self.dir.resolve()
        return (DOCS_RUNS.is_dir() and d.parent == DOCS_RUNS.resolve()) or \
            (DOCS_SWEEPS.is_dir() and d.parent.parent == DOCS_SWEEPS.resolve())

    def exists(self) -> bool:
        return _is_run_dir(self.dir)

    def check_layout(self, names=tuple(LAYOUT)) -> None:
        """RunError if one of the run's files is a folder, or one of its folders a file (check_kind)."""
        for name in names:
            check_kind(self.dir / name, LAYOUT[name])

    def clear(self) -> None:
        """Delete everything of the run but its lock (held by whoever is clearing it)."""
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

    # -- config.json ---------------------------------------------------------------------
    def read_config(self) -> dict:
        """config.json, in this version's format (format 1 is converted); RunError says what is wrong."""
        self.check_layout(["config.json"])
        if not self.config_path.exists():
            raise RunError(f"run {self.name!r} ({self.dir}) has no config.json: it was not written by tinylab's "
                           f"trainer, or it was cut off before starting; delete the directory and train it again")
        try:
            cfg = json.loads(self.config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunError(f"{self.config_path} is not valid JSON ({e}); restore it or delete the run "
                           f"{self.name!r}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"cannot read {self.config_path} ({e}); check its permissions, restore it or delete "
                           f"the run {self.name!r}") from e
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        if fmt == 1:
            return upgrade_config_v1(cfg)
        if fmt is None:
            raise RunError(f"run {self.name!r} ({self.dir}) has no 'format' in config.json: it comes from an older "
                           f"tinylab whose metrics this version cannot read; train it again (or delete it)")
        if fmt != FORMAT:
            raise RunError(f"run {self.name!r} ({self.dir}) has config format {fmt!r}, but this tinylab reads "
                           f"formats 1 and {FORMAT}: update tinylab (git pull) to read it, or train the run again")
        return cfg

    def write_config(self, cfg: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        paths.atomic_write(self.config_path, json.dumps(dict(cfg, format=FORMAT), indent=1))

    # -- checkpoints ---------------------------------------------------------------------
    def incomplete_checkpoints(self) -> list[Path]:
        """step_* directories without their marker: damaged by hand (a killed save leaves only .tmp-*)."""
        self.check_layout(["checkpoints"])
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step_*") if not (p / CHECKPOINT_MARKER).is_file())

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first (a file named checkpoints is refused, not read as none)."""
        self.check_layout(["checkpoints"])
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step_*") if (p / CHECKPOINT_MARKER).is_file())

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def refuses_fresh_start(self, resume: bool, overwrite: bool) -> Path | None:
        """The checkpoint for which training refuses to start this run: it has one, and was asked neither to resume
        it nor to overwrite it (tinylab.train's prepare)."""
        return None if resume or overwrite else self.latest_checkpoint()

    def checkpoint(self, step: int | None = None) -> Path:
        """The checkpoint of `step` (None: the newest); RunError says which steps exist."""
        ckpts = self.checkpoints()
        if not ckpts and self.published:
            raise RunError(f"run {self.name!r} is published in the repository with its config and metrics but no "
                           f"weights: train your own (`python -m tinylab.train --run NAME`) to use a checkpoint")
        if not ckpts and self.incomplete_checkpoints():
            raise RunError(f"run {self.name!r} has no complete checkpoint: {self.incomplete_checkpoints()[-1]} has no "
                           f"{CHECKPOINT_MARKER} (damaged); restore it, or delete it and "
                           f"{self.how_to_train('--overwrite')}")
        if not ckpts:
            raise RunError(f"run {self.name!r} has no checkpoint yet (looked in {self.checkpoints_dir}): "
                           f"{self.how_to_train()}")
        if step is None:
            return ckpts[-1]
        for c in ckpts:
            if c.name == f"step_{step:06d}":
                return c
        raise RunError(f"run {self.name!r} has no checkpoint at step {step}; it has "
                       f"{', '.join(str(int(c.name[5:])) for c in ckpts)}")

    def how_to_train(self, *flags: str) -> str:
        """The command that trains this run in its own directory (with flags), as a hint: the sweep's for a sweep's
        point; `train --run` only where that name leads here, as it never does for a run found by a path elsewhere."""
        home_runs, d = (paths.home() / "runs").resolve(), self.dir.resolve()
        if is_sweep_dir(d.parent) and d.parent.parent == home_runs:  # the sweep trains, resumes or redoes its points
            return (f"train it with its sweep, `python -m tinylab.sweep {d.parent.name}` (`--plan` shows what that "
                    f"would do)")
        if is_run_name(self.name) and home_runs / self.name == d:
            return f"train it with `python -m tinylab.train --run {' '.join([self.name, *flags])}`"
        if d.parent.name == "runs" and is_run_name(d.name):  # another home's run: train it with that home
            return (f"train it with `TINYLAB_HOME={d.parent.parent} python -m tinylab.train --run "
                    f"{' '.join([d.name, *flags])}`")
        return "train a run of your own with `python -m tinylab.train --run NAME` (it writes $TINYLAB_HOME/runs/NAME)"

    def eval_csv(self, kind: str, step: int) -> Path:
        """Where the table of a `kind` evaluation (core, probes, bpb) of step's checkpoint goes."""
        return self.evals_dir / f"{kind}-step_{step:06d}.csv"

    def clean_orphans(self) -> list[Path]:
        """Delete what an interrupted save left behind (hidden temp directories and files); return them."""
        left = [p for d in (self.checkpoints_dir, self.dir, self.tokenizer_dir) if d.is_dir() for p in d.iterdir()
                if p.name.startswith((".tmp-", ".old")) or (p.name.startswith(".") and p.name.endswith(".tmp"))]
        for p in left:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return left

    # -- exclusive use -------------------------------------------------------------------
    @contextmanager
    def lock(self):
        """Hold the run while training it: a second trainer gets a RunError naming the first.

        An flock on .lock: the kernel releases it when the holding process dies, so a lock left by
        a killed process is simply taken over; the file only records who holds it."""
        import fcntl

        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"{self.dir} is a file, not a run directory: move it away or pick another run name")
        self.check_layout()  # training writes every one of them, and may take hours to reach the last
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise RunError(f"run {self.name!r} is being trained by {holder}: wait for it to finish, stop it, "
                               f"or pick another run name") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # releases the flock


def distinct_runs(runs) -> list[Run]:
    """The runs to compare, each once, with names that tell them apart (load_runs, eval_table, ...).

    An entry that resolves to a directory already taken (a name and its path, or a name given twice) is taken
    once: drawing one run twice only doubles its rows. Two directories with one name (a local run R and
    /elsewhere/runs/R, which is named by its directory) are both kept, each named by the shortest tail of its
    path that the others do not share ("h/runs/R", "h2/runs/R"), so a table row or a legend entry is one run,
    never two runs merged, and the name says where each comes from."""
    found: dict[Path, Run] = {}
    for entry in runs:
        r = Run.find(entry)
        found.setdefault(r.dir.resolve(), r)
    by_name: dict[str, list[Path]] = {}
    for d, r in found.items():
        by_name.setdefault(r.name, []).append(d)
    for name, dirs in by_name.items():
        if len(dirs) > 1:
            for d, tail in zip(dirs, _distinct_tails(dirs)):
                found[d] = Run(found[d].dir, tail)
    return list(found.values())


def _distinct_tails(dirs: list[Path]) -> list[str]:
    """The shortest trailing parts of these (resolved, different) paths that differ from one another."""
    for k in range(2, max(len(d.parts) for d in dirs) + 1):
        tails = [Path(*d.parts[-k:]).as_posix() for d in dirs]
        if len(set(tails)) == len(tails):
            return tails
    return [d.as_posix() for d in dirs]


def _is_run_dir(d: Path) -> bool:
    """What only a run holds: metrics.jsonl, checkpoints/, or a config.json of tinylab's. A transformers
    model's config.json (tinylab.export writes one) does not make a run, so an export can be replaced."""
    if (d / "metrics.jsonl").exists() or (d / "checkpoints").exists():
        return True
    return (d / "config.json").exists() and not _is_transformers_config(d / "config.json")


def _is_transformers_config(path: Path) -> bool:
    """A JSON object naming a model_type (every transformers config does; tinylab's never does). One that
    cannot be read is not: a run with a damaged config.json stays a run, never skipped or replaced."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and "model_type" in cfg and "format" not in cfg


def expand(text: str) -> Path:
    """Path(text) with a leading ~ expanded; ~user of a user that does not exist stays as written (no directory)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib cannot find that user's home: a path that leads nowhere, not a crash
        return Path(text)


def is_run_name(name) -> bool:
    """The shape of a name Run.at trains into: a NAME_PART, or two joined by '/' (a sweep's point), each short
    enough for a directory name. A path ('./x', '~/x', '/x', 'a/b/c') is not one, nor is ''."""
    parts = name.split("/") if isinstance(name, str) else [""]
    return len(parts) <= 2 and all(NAME_PART.fullmatch(p) and len(p.encode()) <= MAX_NAME_BYTES for p in parts)


def _sweep_named(text: str) -> Path | None:
    """The sweep `text` names (find_sweep's rule), or None."""
    try:
        return find_sweep(text) if text else None
    except RunError:
        return None


def _sweep_commands(d: Path, name: str) -> str:
    """What to do with sweep directory d (named `name`), as a hint: plan and train it when it is local (tinylab.sweep
    trains only under $TINYLAB_HOME/runs); read a published one, or run its spec as a sweep of one's own."""
    if d.parent.resolve() == (paths.home() / "runs").resolve():
        return (f"see its points with `python -m tinylab.sweep {d.name} --plan` and train them with "
                f"`python -m tinylab.sweep {d.name}`")
    return (f"read its results with tinylab.sweeps.load_sweep({name!r}), or run it yourself with "
            f"`python -m tinylab.sweep NAME --spec {d / SWEEP_SPEC}`")


def is_sweep_dir(d: Path) -> bool:
    """A sweep's directory is marked by its spec (tinylab.sweep writes it before any point trains)."""
    return (d / SWEEP_SPEC).is_file()


def _run_dirs(root: Path) -> list[Path]:
    """Run directories under root, sorted; a directory that is not a run but holds runs is a sweep."""
    if not root.is_dir():
        return []
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_run_dir(d):
            found.append(d)
        else:
            found += [p for p in sorted(d.iterdir()) if p.is_dir() and _is_run_dir(p)]
    return found


def sweep_roots() -> dict[str, Path]:
    """Where sweeps are looked for, in order, by the prefix that names them: $TINYLAB_HOME/runs, docs/sweeps."""
    return {"": paths.home() / "runs", SWEEPS_PREFIX: DOCS_SWEEPS}


def all_sweeps() -> dict[str, Path]:
    """Every sweep directory (one holding spec.json) by name; a published one that is also local is
    listed as "docs/sweeps/<name>"."""
    found: dict[str, Path] = {}
    for prefix, root in sweep_roots().items():
        for d in sorted(root.glob(f"*/{SWEEP_SPEC}")) if root.is_dir() else []:
            name = d.parent.name
            found[prefix + name if name in found else name] = d.parent
    return found


def find_sweep(name: "str | Path") -> Path:
    """The directory of sweep `name`: a path to one; else $TINYLAB_HOME/runs/<name>; else docs/sweeps/<name>
    ("docs/sweeps/<name>" picks the published one when a local sweep has the same name)."""
    text = str(name)
    if text.startswith(SWEEPS_PREFIX) and is_sweep_dir(DOCS_SWEEPS / text[len(SWEEPS_PREFIX):]):
        return DOCS_SWEEPS / text[len(SWEEPS_PREFIX):]
    candidates = [expand(text)] + [root / text for root in sweep_roots().values()]
    for d in candidates:
        if is_sweep_dir(d):
            return d
    known = ", ".join(all_sweeps()) or "none yet"
    raise RunError(f"no sweep {text!r} in {' or '.join(map(str, sweep_roots().values()))} (sweeps found: {known}); "
                   f"start one with `python -m tinylab.sweep {text} --preset P --grid KNOB=A,B`")


def upgrade_config_v1(cfg: dict) -> dict:
    """A format-1 config.json (model + one flat `train` section) in this version's layout."""
    from .config import knob_fields

    table = knob_fields()
    train = dict(cfg.get("train", {}))
    derived = dict(params=cfg.get("params"), flops_per_token=cfg.get("flops_per_token"),
                   total_batch_size=train.pop("total_batch_size", None), grad_accum=train.pop("grad_accum", None),
                   num_iterations=train.pop("num_iterations", None), lrs=train.pop("lrs", None))
    train["total_batch_size"] = train.pop("requested_total_batch_size", derived["total_batch_size"])
    train["corpus"] = cfg.get("corpus")
    out = {k: v for k, v in cfg.items() if k not in ("train", "params", "flops_per_token", "corpus")}
    for name, value in train.items():
        if name in table and value is not None:
            out.setdefault(table[name][0].group, {})[name] = value
    return dict(out, derived=derived, format=FORMAT)
