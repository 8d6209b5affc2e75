"""What `python -m tinylab.train` does before it imports torch: its arguments, declared here once (train.main parses
them), and the data child started on the run's config during torch's import (~3 s), so that the tokenizer and the
tokens are being made meanwhile (docs/benchmarks.md §3). The trainer adopts the child if it trains that config;
train.main stops one left over. Free of torch, like everything it imports.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
from dataclasses import replace

from . import prepare
from .config import LENGTH_KNOBS, ConfigError, TrainConfig, add_knob_arguments, knob_arguments
from .errors import ArgumentParser
from .presets import DEFAULT, PRESETS, preset_from_env, resolve
from .run import Run


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m tinylab.train", description="Pretrain a tinylab GPT.")
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: $TINYLAB_PRESET, else {DEFAULT})")
    p.add_argument("--run", help="run name (default: the preset name); artifacts in $TINYLAB_HOME/runs/<run>/")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run of that name first")
    p.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: $TINYLAB_DEVICE, else the best available)")
    p.add_argument("--no-progress", action="store_true")
    add_knob_arguments(p)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["--"]:  # torchrun ... -m tinylab.train -- --run X: the `--` keeps torchrun off our flags
        argv = argv[1:]
    return parser().parse_args(argv)


def names(a: argparse.Namespace) -> tuple[TrainConfig | str, str]:
    """(preset, run) of the parsed arguments: the run is named after the preset unless --run names it. --resume
    without --preset continues a run as its config.json says (knob flags still override), not as $TINYLAB_PRESET
    or the default preset would have it."""
    preset = a.preset or preset_from_env().name
    run = preset if a.run is None else a.run  # an empty --run is refused by Run.at, not read as "not given"
    target = Run.at(run) if a.resume and a.preset is None else None  # (Run.at refuses a bad name with its own message)
    if target is not None and not target.config_path.exists():  # nothing says what it was: the default preset
        raise ConfigError(f"--resume without --preset continues a run as its config.json says, but run {run!r} has "
                          f"none ({target.dir}): pass --preset and the knobs it was started with")
    if target is not None:
        saved = target.read_config()
        try:
            cfg = TrainConfig.from_dict(saved, name=saved.get("preset", "custom"))
        except ConfigError as e:  # e.g. a knob this version no longer has
            raise ConfigError(f"run {run!r} cannot be resumed from its config.json ({e}); pass --preset and the knobs "
                              f"it was trained with") from None
        return resumed_length(cfg, knob_arguments(a)), run
    return preset, run


def resumed_length(cfg: TrainConfig, flags: dict) -> TrainConfig:
    """A resumed run's config with its length as this command's flags give it: --target-tokens replaces the
    num_iterations the run was started with (a sweep's point has one), which would otherwise still decide and leave
    the new target recorded but unused. --num-iterations decides, given alone or with --target-tokens (as a sweep's
    queue gives both, consistent); neither keeps the run's own length."""
    if set(flags) & set(LENGTH_KNOBS) == {"target_tokens"} and cfg.loop.num_iterations is not None:
        return replace(cfg, loop=replace(cfg.loop, num_iterations=None))
    return cfg


def start_data_early(argv: list[str]) -> None:
    """Start the data child for a fresh run on one process: not for --resume (a resumed run keeps its own tokenizer),
    nor for a run that has a checkpoint and no --overwrite (the command refuses it), nor under torchrun (WORLD_SIZE >
    1: every rank would start one). Arguments that do not parse or resolve start nothing, and quietly: train.main
    reports them."""
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # --help, errors
            a = parse(argv)
            if a.resume:  # (before names(), which reads a resumed run's config.json)
                return
            preset, run = names(a)
            if Run.at(run).refuses_fresh_start(a.resume, a.overwrite) is not None:
                return
            cfg = resolve(preset, knob_arguments(a))
    except (Exception, SystemExit):  # noqa: BLE001 - see the docstring
        return
    prepare.start_early(cfg, progress=not a.no_progress)
