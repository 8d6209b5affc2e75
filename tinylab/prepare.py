"""The data child: the tokenizer and the pre-tokenized splits made in a process of their own while the trainer builds
and compiles its model. Both sides are here. The parent's side starts it (start_data_child, or start_early for
`python -m tinylab.train`, before torch is imported) and stops it (stop_child). The child's side is prepare_files_child.
Free of torch, like everything it imports: the child is at work within a fraction of a second of its start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .config import TrainConfig

DATA_NICENESS = 10  # the data child's scheduling priority below the trainer's (POSIX nice)
# The data child's first lines, before any import: its priority; Ctrl-C left to the parent, which stops it; the
# parent's tinylab first on its path, where `python -c` puts the working directory.
_CHILD = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); hasattr(os, 'nice') and "
          "os.nice({nice}); sys.path[0] = sys.argv[1]; from tinylab.prepare import prepare_files_child; "
          "prepare_files_child()")


def _job(cfg: TrainConfig, progress: bool) -> str:
    """The child's job, the one line it reads from its stdin."""
    return json.dumps(dict(config=cfg.to_dict(), progress=progress)) + "\n"


def start_data_child(cfg: TrainConfig, progress: bool) -> subprocess.Popen:
    """A new interpreter (not multiprocessing's spawn, which would run the caller's script again) running
    prepare_files_child on cfg, with this one's sys.path. Its stdin stays open: the child stops when it closes."""
    root = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(nice=DATA_NICENESS), root], stdin=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, sys.path))))
    try:
        child.stdin.write(_job(cfg, progress))
        child.stdin.flush()
    except OSError:  # it died at once: load_data does the work
        pass
    return child


def stop_child(child: subprocess.Popen) -> None:
    """Terminate the child if it still runs (its handler acts once native code, such as training the tokenizer,
    returns; killed after 5 s), then close its stdin."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(5.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    child.stdin.close()


_early: tuple[str, subprocess.Popen] | None = None  # the child start_early started, with its job


def start_early(cfg: TrainConfig, progress: bool) -> None:
    """Start the child before the trainer is imported; the trainer takes it over with adopt_early."""
    global _early
    stop_early()
    _early = _job(cfg, progress), start_data_child(cfg, progress)


def has_early() -> bool:
    return _early is not None


def adopt_early(cfg: TrainConfig, progress: bool) -> subprocess.Popen | None:
    """The child start_early started, if it works on this job (else it is stopped), and none from then on."""
    global _early
    if _early is None or _early[0] != _job(cfg, progress):
        stop_early()
        return None
    child, _early = _early[1], None
    return child


def stop_early() -> None:
    """Stop a child that start_early started and nobody adopted (the command failed before its data was due)."""
    global _early
    early, _early = _early, None
    if early is not None:
        stop_child(early[1])


def _exit_at_eof() -> None:
    """Stop this process (SIGTERM, so its writes clean up) once stdin closes: the parent is gone."""
    while os.read(0, 1 << 16):  # the raw fd: a thread blocked in sys.stdin would hold its lock at exit
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def prepare_files_child() -> None:
    """The data child's side: the job (config and progress) as a JSON line on stdin, then tokens.prepare_tokens. It ends
    quietly on any failure, since load_data then meets the same failure and reports it; on SIGTERM, or when its
    parent is gone, once its writes cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # SystemExit: the finally blocks run
    try:
        job = json.loads(sys.stdin.readline())
        threading.Thread(target=_exit_at_eof, daemon=True).start()
        from .tokens import prepare_tokens  # numpy and the tokenizer: imported by the child only

        prepare_tokens(TrainConfig.from_dict(job["config"]), progress=job["progress"])
    except BaseException:  # noqa: BLE001 - reported by load_data in the parent
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
