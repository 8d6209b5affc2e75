"""The main job: execute every numbered notebook headless, in order, like a user would.

    TINYLAB_PRESET=smoke python -m tinylab.pipeline      # what `make run` does

Each notebook runs in a fresh kernel with the current environment (so TINYLAB_PRESET and
TINYLAB_HOME reach it); executed copies land in $TINYLAB_HOME/notebooks/ and the source
notebooks in notebooks/ are never modified. A failing cell stops the job with the
notebook's name and the cell's error, and the partly executed copy is still written so the
traceback can be read in JupyterLab.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import paths
from .errors import ArgumentParser, TinylabError, cli, positive

NOTEBOOK_DIR = paths.REPO / "notebooks"


def notebooks(selection: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally only those whose name contains a selector."""
    found = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selection and not all(s.strip() for s in selection):  # "" is in every name: it would select them all
        raise TinylabError(f"an empty notebook selector in {selection}: give part of a name, e.g. 01, or none to run "
                           f"every notebook")
    if selection:
        found = [p for p in found if any(s in p.name for s in selection)]
    return found


def kernel_config(socket_dir: str):
    """Talk to the kernel over Unix sockets in `socket_dir` (IPC) instead of TCP on localhost.

    ipykernel >= 7 warns "Kernel is running over TCP without encryption" at every start, because
    any local user can connect to a TCP port. IPC sockets are files in a directory only we can
    open (tempfile makes it 0700), so there is nothing to encrypt. The socket prefix must be an
    absolute path: the default, a relative "kernel-ipc", would resolve against the kernel's working
    directory (the notebook's) on one side and ours on the other. Windows keeps TCP.
    """
    from traitlets.config import Config
    if os.name != "posix":
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(socket_dir, "kernel")}})


def execute(path: Path, out_dir: Path, timeout: int = 900) -> float:
    """Run one notebook top to bottom in a fresh kernel; write the executed copy; return seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinylab-kernel-") as sockets:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=kernel_config(sockets),
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        finally:
            nbformat.write(nb, out_dir / path.name)
    return time.perf_counter() - t0


def artifacts_summary(home: Path) -> list[str]:
    """One line per artifact folder that exists under TINYLAB_HOME."""
    lines = []
    for name, what in [("tokenizer", "tokenizers"), ("tokens", "token shards"), ("runs", "runs (checkpoints, metrics.jsonl)"),
                       ("notebooks", "executed notebooks")]:
        d = home / name
        if d.is_dir():
            items = sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
            lines.append(f"  {what:34s} {d}/  [{', '.join(items)}]")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m tinylab.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run only notebooks whose file name contains one of these (e.g. 01 03)")
    ap.add_argument("--timeout", type=positive(int, "timeout (seconds)"), default=900, help="seconds allowed per cell")
    ap.add_argument("--in-place", action="store_true",
                    help="also copy each notebook that ran through back over notebooks/ (`make notebooks`)")
    args = ap.parse_args(argv)

    from .presets import preset_from_env
    preset = preset_from_env()  # fail fast on an unknown TINYLAB_PRESET, before any kernel starts
    home = paths.home()
    out_dir = paths.subdir("notebooks")
    todo = notebooks(args.only)
    if not todo:
        raise TinylabError(f"no notebooks matching {args.only} in {NOTEBOOK_DIR}: give part of a name, e.g. 01")
    print(f"tinylab main job: preset {preset.name!r}, TINYLAB_HOME={home}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from nbclient.exceptions import CellExecutionError
    total = time.perf_counter()
    for path in todo:
        print(f"  running {path.name} ...", end=" ", flush=True)
        try:
            seconds = execute(path, out_dir, args.timeout)
        except CellExecutionError as e:
            print("FAILED")
            print(f"\n{path.name} failed; the partly executed copy is {out_dir / path.name}\n{e}", file=sys.stderr)
            return 1
        print(f"{seconds:5.1f}s")
        if args.in_place:  # only a notebook that ran through replaces the committed one
            shutil.copyfile(out_dir / path.name, path)
    print(f"done in {time.perf_counter() - total:.1f}s. Artifacts under {home}:")
    print("\n".join(artifacts_summary(home)))
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
