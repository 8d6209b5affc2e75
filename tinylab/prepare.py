"""The trainer's data child (tinylab.train.start_data_child), its side: the tokenizer and the pre-tokenized splits
made in a process of their own while the trainer compiles. Free of torch, like everything it imports, so the child
is at work within a fraction of a second of its start.
"""
import json
import os
import signal
import sys
import threading

from .config import TrainConfig
from .tokens import prepare_tokens


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
        prepare_tokens(TrainConfig.from_dict(job["config"]), progress=job["progress"])
    except BaseException:  # noqa: BLE001 - reported by load_data in the parent
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
