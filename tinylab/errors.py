"""One exception root, and the one way every command line turns errors into a message.

Every error tinylab raises on purpose derives from TinylabError and carries a message that
says what to do. `cli(main)` is the wrapper every `python -m tinylab.X` entry point runs
under: a TinylabError becomes `error: <message>` on stderr and exit status 2 (bad input) or
1 (a run that failed); Ctrl-C exits 130, also while the command is still importing (exit_on_interrupt).
Failures a user can cause from outside Python (a full disk, a file truncated by a crash, no CUDA,
a strict locale) are recognised in `explain` and given the same one-line treatment. Anything else
is a bug and keeps its traceback.

This module imports nothing heavy (no torch), so any module may import it.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from pathlib import Path

BAD_INPUT, FAILED_RUN, INTERRUPTED = 2, 1, 130
INTERRUPTED_LINE = "\ninterrupted"  # what Ctrl-C prints, on a line of its own (after ^C)


class TinylabError(Exception):
    """Root of every error tinylab raises on purpose; the message says what to do."""

    exit_code = BAD_INPUT

    def __str__(self):  # KeyError-based subclasses would otherwise show their message quoted
        return str(self.args[0]) if self.args else ""


class RunFailedError(TinylabError):
    """Valid input, but the work itself failed (a NaN loss, out of memory); exit status 1."""

    exit_code = FAILED_RUN


class UsageError(TinylabError):
    """A command line that does not parse: a missing or malformed argument."""


class DeviceError(TinylabError):
    """A device that is not there (cuda without a GPU, a typo)."""


class DiskError(TinylabError):
    """Writing failed for lack of space or permission; nothing already written was lost; exit status 1."""

    exit_code = FAILED_RUN  # the input was fine: free space (or fix permissions) and run it again


def explain(exc: BaseException) -> TinylabError | None:
    """The TinylabError a user should see for an outside failure, or None for a genuine bug."""
    if isinstance(exc, TinylabError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"the disk is full ({exc.filename or 'while writing'}): free some space and run the "
                         f"command again; files written before this point are intact")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return DiskError(f"no permission to write {exc.filename or 'a file'} ({exc.strerror}): point "
                         f"TINYLAB_HOME at a writable directory")
    if isinstance(exc, OSError) and exc.errno == errno.ENOTDIR:
        return TinylabError(f"{_file_on_the_way(exc.filename)} is a file, not a directory: move it aside, or point "
                            f"TINYLAB_HOME (or the path you gave) at a directory")
    if isinstance(exc, OSError) and exc.errno in (errno.EISDIR, errno.EEXIST):  # a folder where a file goes, or back
        return TinylabError(f"{exc.filename or 'a path'} is in the way ({exc.strerror}): a folder where tinylab "
                            f"writes a file, or a file where it makes a folder; move it aside and run the command again")
    if isinstance(exc, UnicodeEncodeError):
        return TinylabError(f"the terminal cannot show this text ({exc.reason}): run with "
                            f"PYTHONIOENCODING=utf-8:replace or a UTF-8 locale (e.g. LANG=C.UTF-8)")
    if isinstance(exc, UnicodeDecodeError):
        return TinylabError(f"input is not valid UTF-8 ({exc.reason} at byte {exc.start}): convert it to UTF-8, "
                            f"or run with PYTHONIOENCODING=utf-8:surrogateescape")
    return None


def _file_on_the_way(filename) -> str:
    """The file that stands where a folder on the way to `filename` should be (ENOTDIR names only the end)."""
    if not filename:
        return "a path on the way to a file"
    for parent in reversed(Path(os.fsdecode(filename)).parents):  # outermost first: the first file met is in the way
        if parent.exists() and not parent.is_dir():
            return str(parent)
    return f"a path leading to {filename}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line (via UsageError) instead of usage + exit."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _number(kind, what: str, ok, rule: str):
    """An argparse type: a finite `kind` for which ok(value) holds (argparse makes the error a usage error)."""
    rule = ("an integer " if kind is int else "a finite number ") + rule

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {rule}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{what} must be {rule}, got {text!r}")
        return value
    return parse


def positive(kind, what: str, maximum=None):
    """An argparse type: a finite number > 0 (and <= maximum, if given)."""
    rule = "> 0" + (f" and <= {maximum}" if maximum is not None else "")
    return _number(kind, what, lambda v: v > 0 and (maximum is None or v <= maximum), rule)


def between(kind, what: str, minimum, maximum):
    """An argparse type: a finite number in [minimum, maximum]."""
    return _number(kind, what, lambda v: minimum <= v <= maximum, f"from {minimum} to {maximum}")


def at_least(kind, what: str, minimum):
    """An argparse type: a finite number >= minimum (e.g. 0 for a count that may be zero)."""
    return _number(kind, what, lambda v: v >= minimum, f">= {minimum}")


def appendable(text: str) -> str:
    """An argparse type: a file that results can be appended to, checked before the work that makes them."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no directory {path.parent}: create it or give another path")
    return text


def positive_ints(text: str) -> list[int]:
    """An argparse type: positive integers separated by commas (batch sizes, stream counts)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, e.g. 8,16; got {text!r}")
    return values


def some_of(choices) -> callable:
    """An argparse type: one or more of `choices` separated by commas, as a list."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if v not in choices]
        if not values or wrong:
            raise argparse.ArgumentTypeError(f"{', '.join(map(repr, wrong)) or repr(text)} is not one of "
                                             f"{', '.join(choices)} (give one or more, separated by commas)")
        return values
    return parse


def cli(main, argv=None, stderr=None) -> int:
    """Run main(argv) -> exit status, turning errors into one line on stderr (see module doc)."""
    stderr = stderr or sys.stderr
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print(INTERRUPTED_LINE, file=stderr)
        return INTERRUPTED
    except BaseException as e:  # noqa: BLE001 - re-raised below unless it is a known kind
        known = explain(e)
        if known is None:
            raise
        print("error: " + " ".join(str(known).splitlines()), file=stderr)  # one line, even if a cause had more
        return known.exit_code


def exit_on_interrupt() -> None:
    """Ctrl-C before cli() runs main (while a command imports torch or pandas, seconds) ends the process as cli()
    would: the same line and status 130, not a KeyboardInterrupt traceback. Installed by tinylab/__init__.py for
    `python -m tinylab.X` only; other exceptions keep the hook they had."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        try:
            print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
            sys.stdout.flush()
        except (OSError, ValueError):  # a closed pipe: the status still tells
            pass
        # os._exit: once the hook returns, CPython kills itself with SIGINT (a status of -2, not 130). Nothing is
        # lost: uncaught, the interrupt came before main wrote anything, and a data child that train started early
        # stops by itself once its stdin closes
        os._exit(INTERRUPTED)

    sys.excepthook = hook
