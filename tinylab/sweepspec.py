"""What a sweep trains: its spec (checked key by key against each knob's declaration), its points and their budgets.

tinylab.sweep's docstring describes a spec's keys; this module turns one into resolved points, each a TrainConfig
named by the knobs it sets, an illegal one kept and marked invalid, before anything trains.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import (ALIASES, LENGTH_KNOBS, ConfigError, TrainConfig, check_knob, knob_names, parse_knob,
                     unknown_knob)
from .presets import PRESETS, get_preset
from .schedule import RunPlan, num_iterations_for

SPEC_KEYS = ("preset", "description", "knobs", "grid", "points", "budget", "probes")
BUDGETS = {"tokens": "equal tokens", "flops": "equal training FLOPs", "seconds": "equal training time"}
BUDGET_KNOBS = LENGTH_KNOBS  # what a budget decides, so a spec may not set them too
MAX_NAME = 160  # characters of a point name (a directory name; filesystems stop at 255 bytes)
# How far a point's whole steps may miss a tokens or FLOPs budget. Rounding to whole steps misses by at most half a
# step, under 10% from 5 steps up; a point that misses by more (one step already over the budget) would not be
# compared at an equal budget, so it is invalid.
BUDGET_TOLERANCE = 0.10


class SweepError(ConfigError):
    """A sweep that cannot start: a bad spec, a knob value, a name; the message says what to change."""


# ------------------------------------------------------------------------------- the spec

@dataclass(frozen=True)
class Spec:
    """What a sweep trains (tinylab.sweep's docstring describes each key); every value already checked."""
    preset: str
    description: str = ""
    knobs: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    points: list = field(default_factory=list)
    budget: dict = field(default_factory=dict)
    probes: bool = False

    @classmethod
    def from_dict(cls, d) -> "Spec":
        """A spec checked key by key, and each value against its knob's declared type and range."""
        if not isinstance(d, dict):
            raise SweepError(f"a sweep spec is a JSON object with the keys {', '.join(SPEC_KEYS)}; got {d!r}")
        unknown = sorted(set(d) - set(SPEC_KEYS))
        if unknown:
            raise SweepError(f"unknown spec key(s) {unknown}; a spec has {', '.join(SPEC_KEYS)}")
        if "preset" not in d:
            raise SweepError(f"the spec names no preset: add \"preset\": one of {', '.join(PRESETS)}")
        grid, points = d.get("grid") or {}, d.get("points") or []
        if not isinstance(grid, dict) or not isinstance(points, list):
            raise SweepError("the spec's grid is an object (knob -> list of values), its points a list of objects")
        budget, probes = checked_budget(d.get("budget") or {}), d.get("probes", False)
        if not isinstance(probes, bool):
            raise SweepError(f"the spec's probes must be true or false (JSON, not a string), got {probes!r}")
        spec = cls(checked_preset(d["preset"], "preset"), str(d.get("description", "")),
                   checked_knobs(d.get("knobs") or {}, "knobs", budget, False),
                   {k: checked_values(k, v, budget) for k, v in once(grid.items(), "grid").items()},
                   [checked_knobs(p, f"points[{i}]", budget) for i, p in enumerate(points)], budget,
                   probes)
        check_set_once(spec)
        return spec

    @classmethod
    def load(cls, path) -> "Spec":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        except FileNotFoundError:
            raise SweepError(f"no spec file {path}: pass the path of a JSON spec (see `python -m tinylab.sweep "
                             f"--help`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SweepError(f"{path} is not valid JSON ({e}); fix the spec file") from None
        except SweepError as e:
            raise SweepError(f"{path}: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """spec.json: one line per key, and per point."""
        d = self.to_dict()
        lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items() if k != "points"]
        points = ",\n".join(f"  {json.dumps(p)}" for p in d["points"])
        lines.insert(list(d).index("points"), f' "points": [\n{points}\n ]' if points else ' "points": []')
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def same_sweep(self, other: "Spec") -> bool:
        """Whether two specs train the same points the same way (the description may change)."""
        return {**self.to_dict(), "description": ""} == {**other.to_dict(), "description": ""}

    @property
    def budget_text(self) -> str:
        if not self.budget:
            return "each point's own steps"
        (kind, amount), = self.budget.items()
        unit = {"tokens": f"{amount:,} tokens", "flops": f"{amount:.4g} FLOPs", "seconds": f"{amount:g} s"}[kind]
        return f"{BUDGETS[kind]} ({unit} per point)"


def knob_name(name: str) -> str:
    """A knob's canonical name ("seq_len" is sequence_len); "preset" picks a point's preset."""
    name = ALIASES.get(name, name)
    if name != "preset" and name not in knob_names():
        raise unknown_knob(name)
    return name


def once(items, where: str) -> dict:
    """{knob: value} from (name, value) pairs; a knob given twice, under one name or two (seq_len and sequence_len),
    is refused: a dict would silently keep the last value and drop the other."""
    out, given = {}, {}
    for name, value in items:
        knob = knob_name(name)
        if knob in out:
            raise twice(where, knob, given[knob], name, "give it once")
        out[knob], given[knob] = value, name
    return out


def twice(where: str, knob: str, first: str, second: str, fix: str) -> SweepError:
    names = f" ({first} and {second})" if first != second else ""
    return SweepError(f"{where} sets {knob} twice{names}: {fix}")


def unique_keys(pairs) -> dict:
    """json.loads' object hook: a key given twice in one object is refused (json keeps the last one silently)."""
    keys = [k for k, _ in pairs]
    dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if dup is not None:
        raise SweepError(f"an object gives {dup!r} twice: give it once")
    return dict(pairs)


def check_set_once(spec: "Spec") -> None:
    """A knob is set for every point (the spec's knobs) or varied (the grid, a point), not both: the grid's or the
    point's value would silently win over the spec's."""
    places = [("the grid", spec.grid)] + [(f"points[{i}]", p) for i, p in enumerate(spec.points)]
    for name in spec.knobs:
        for where, knobs in places:
            if name in knobs:
                raise SweepError(f"{name} is set by the spec's knobs (on the command line: its knob flag) and by "
                                 f"{where}: drop one")


def checked_preset(name, where: str) -> str:
    if name not in PRESETS:
        raise SweepError(f"{where}: unknown preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return name


def checked_knobs(knobs, where: str, budget: dict, preset_ok: bool = True) -> dict:
    """{knob: value} with each value checked on its own (combinations are checked per point, later)."""
    if not isinstance(knobs, dict):
        raise SweepError(f"{where} must be an object of knob values, e.g. {{\"tie_embeddings\": true}}; got {knobs!r}")
    out = {}
    for name, value in once(knobs.items(), where).items():
        if name == "preset" and not preset_ok:
            raise SweepError(f"{where} sets preset: the spec's own \"preset\" key is the base of every point")
        if budget and name in BUDGET_KNOBS:
            raise SweepError(f"{where} sets {name}, but the budget decides the steps: drop one of the two")
        if value is None:  # override() reads None as "not given", so the point would silently keep the preset's
            raise SweepError(f"{where} sets {name} to none, which would leave the preset's value in place: leave "
                             f"{name} out, or give it a value")
        try:
            out[name] = checked_preset(value, where) if name == "preset" else check_knob(name, value)
        except ConfigError as e:
            raise SweepError(f"{where}: {e}") from None
    return out


def checked_values(name: str, values, budget: dict) -> list:
    if not isinstance(values, list) or not values:
        raise SweepError(f"grid {name}: give a non-empty list of values, e.g. [64, 128]; got {values!r}")
    out = [checked_knobs({name: v}, f"grid {name}", budget)[knob_name(name)] for v in values]
    if len({json.dumps(v) for v in out}) < len(out):
        raise SweepError(f"grid {name} lists a value twice ({values}): each value once")
    return out


def checked_budget(budget) -> dict:
    if not isinstance(budget, dict) or len(budget) > 1 or not set(budget) <= set(BUDGETS):
        raise SweepError(f"budget must be one of {{\"tokens\": N}}, {{\"flops\": F}}, {{\"seconds\": S}} or none; "
                         f"got {budget!r}")
    if not budget:
        return {}
    (kind, amount), = budget.items()
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < float("inf"):
        raise SweepError(f"budget {kind} must be a positive number, got {amount!r}")
    if kind == "tokens" and amount != int(amount):
        raise SweepError(f"budget tokens must be a whole number, got {amount!r}")
    return {kind: int(amount) if kind == "tokens" else float(amount)}


def parse_grid(items: list[str]) -> dict:
    """Command-line grid axes ["head_dim=64,128", ...] as {knob: [values]}, each value parsed by its knob's type."""
    grid, given = {}, {}
    for item in items:
        text_name, sep, text = item.partition("=")
        if not sep or not text:
            raise SweepError(f"grid axis {item!r} is not KNOB=VALUE,VALUE: write it like head_dim=64,128")
        name = knob_name(text_name.strip())
        if name in grid:
            raise twice("the grid", name, given[name], text_name.strip(), "give all its values in one KNOB=A,B")
        given[name] = text_name.strip()
        values = [checked_preset(v, "grid preset") if name == "preset" else parse_knob(name, v)
                  for v in text.split(",")]
        grid[name] = checked_values(name, values, {})
    return grid


def parse_point(items: list[str]) -> dict:
    """One command-line point ["depth=6", "model_dim=448"] as {knob: value}."""
    pairs = []
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SweepError(f"point setting {item!r} is not KNOB=VALUE: write it like depth=6")
        name = name.strip()
        pairs.append((name, checked_preset(text, "point preset") if knob_name(name) == "preset"
                      else parse_knob(name, text)))
    return once(pairs, f"--point {' '.join(items)}")


# ------------------------------------------------------------------------------- points

@dataclass
class Point:
    """One point of a sweep: the knobs it sets (its name), its config, and what is wrong with it."""
    name: str
    knobs: dict
    base: TrainConfig | None = None      # preset + spec knobs + point knobs; None when illegal
    config: TrainConfig | None = None    # base with the budget's steps; None until a rate is calibrated
    error: str = ""
    failed: str = ""                     # "invalid" (illegal, or misses the budget) or "failed" (a TinylabError)


def point_knobs(spec: Spec) -> list[dict]:
    """Every point's own knobs, in order: the grid's combinations, then the explicit points (none: one base point)."""
    combos = [dict(zip(spec.grid, values)) for values in itertools.product(*spec.grid.values())] if spec.grid else []
    return combos + list(spec.points) or [{}]


def value_word(value) -> str:
    """A knob value as it appears in a point name: true, none, 128, 0.02, 1e-05, sample."""
    if isinstance(value, bool) or value is None:
        word = str(value).lower()
    else:
        word = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", word)  # path-safe: a point name is a directory name


def point_name(knobs: dict) -> str:
    return "_".join(f"{k}-{value_word(v)}" for k, v in knobs.items()) or "base"


def resolve_point(spec: Spec, knobs: dict) -> TrainConfig:
    """The point's preset (its own, else the spec's) + the spec's knobs + its own; ConfigError if illegal."""
    own = dict(knobs)
    return get_preset(own.pop("preset", spec.preset)).override(**{**spec.knobs, **own})


def budget_steps(spec: Spec, cfg: TrainConfig, tok_per_s: float | None = None) -> int | None:
    """Optimizer steps of the spec's budget for cfg (None: no budget); a seconds budget needs cfg's tokens/s."""
    if not spec.budget:
        return None
    (kind, amount), = spec.budget.items()
    plan = RunPlan.of(cfg)
    if kind == "flops":  # compute-matched: tokens = FLOPs / FLOPs per token
        tokens = amount / plan.flops_per_token
    elif kind == "seconds":
        tokens = amount * tok_per_s
    else:
        tokens = amount
    return num_iterations_for(tokens, plan.batch.total_batch_size)  # round(tokens / tokens per step)


def with_budget(spec: Spec, cfg: TrainConfig, tok_per_s: float | None = None) -> TrainConfig:
    """cfg with the budget's steps (and tokens), and the probe suite at its last step if the spec asks."""
    steps, plan = budget_steps(spec, cfg, tok_per_s), RunPlan.of(cfg)
    knobs = {} if steps is None else dict(num_iterations=steps, target_tokens=plan.tokens_at(steps))
    if spec.probes:  # the grammar probes once, at the point's last step
        knobs["probes_every"] = steps or plan.num_iterations
    return cfg.override(**knobs) if knobs else cfg


def trained_as(cfg: TrainConfig) -> TrainConfig:
    """What cfg trains: its total_batch_size rounded to whole micro-batches and its steps worked out, as the trainer
    does (RunPlan), so two configs that ask differently for the same run compare equal."""
    plan = RunPlan.of(cfg)
    return cfg.override(total_batch_size=plan.batch.total_batch_size, num_iterations=plan.num_iterations,
                        target_tokens=plan.tokens_at(plan.num_iterations))


def budget_miss(spec: Spec, cfg: TrainConfig) -> str:
    """Why cfg's whole steps miss the spec's tokens or FLOPs budget by more than BUDGET_TOLERANCE ("" if they don't).
    A seconds budget is not checked: its steps come from a rate measured only when the sweep runs."""
    if not spec.budget or "seconds" in spec.budget:
        return ""
    (kind, amount), = spec.budget.items()
    plan = RunPlan.of(cfg)
    steps, per_token = plan.num_iterations, plan.flops_per_token if kind == "flops" else 1
    planned, step = plan.tokens_at(steps) * per_token, plan.batch.total_batch_size * per_token
    if abs(planned - amount) <= BUDGET_TOLERANCE * amount:
        return ""
    enough = math.ceil(0.5 / BUDGET_TOLERANCE)  # steps from which rounding stays within the tolerance
    words = (lambda x: f"{x:.3g} FLOPs") if kind == "flops" else (lambda x: f"{x:,} tokens")
    return (f"{steps} step{'s' * (steps > 1)} of {plan.batch.total_batch_size:,} tokens = {words(planned)}, "
            f"{planned / amount:.2g}x the budget of {words(amount)} (more than {BUDGET_TOLERANCE:.0%} off, so not "
            f"an equal budget): give a budget of at least {words(enough * step)} ({enough} steps), or fewer tokens "
            f"per step (total_batch_size, device_batch_size)")


def resolve_points(spec: Spec, rates: dict) -> list[Point]:
    """Every point resolved before anything trains: illegal ones, and ones whose steps miss the budget, are kept,
    named and marked invalid."""
    points, configs = [], {}
    for knobs in point_knobs(spec):
        p = Point(point_name(knobs), knobs)
        if len(p.name) > MAX_NAME:
            raise SweepError(f"point name {p.name[:60]}... is {len(p.name)} characters long: vary at most a few "
                             f"knobs per point (put the common ones in the spec's knobs)")
        if any(q.name == p.name for q in points):
            raise SweepError(f"two points are both named {p.name!r}: each point must set different knob values")
        try:
            p.base = resolve_point(spec, knobs)
        except ConfigError as e:
            p.error, p.failed = str(e), "invalid"
            points.append(p)
            continue
        check_new_config(p, configs)
        if "seconds" not in spec.budget or p.name in rates:
            p.config = with_budget(spec, p.base, rates.get(p.name))
            p.error = budget_miss(spec, p.config)
            p.failed = "invalid" if p.error else ""
        points.append(p)
    check_shared_tokenizers(points)
    return points


def check_new_config(p: Point, seen: dict) -> None:
    """Refuse a point that trains what an earlier one does (seen: what each trains -> that point)."""
    same = seen.setdefault(json.dumps(trained_as(p.base).to_dict(), sort_keys=True), p)
    if same is p:
        return
    why = ""
    if same.base.to_dict() != p.base.to_dict():  # they ask differently: say what makes them one run
        why = (f" once the batch is rounded to whole micro-batches ({RunPlan.of(p.base).batch.total_batch_size:,} "
               f"tokens per step) and the steps worked out")
    raise SweepError(f"points {same.name!r} and {p.name!r} are the same configuration{why}: drop one of them")


def check_shared_tokenizers(points: list[Point]) -> None:
    """Points of one corpus and vocabulary share one tokenizer, so they must agree on its character budget."""
    budgets: dict[str, set] = {}
    for p in points:
        if p.base is not None:
            budgets.setdefault(p.base.tokenizer_name, set()).add(p.base.data.tokenizer_max_chars)
    for name, chars in budgets.items():
        if len(chars) > 1:
            raise SweepError(f"points share tokenizer {name} (one per corpus and vocabulary) but set "
                             f"tokenizer_max_chars to {sorted(chars)}: give them one budget, or run a sweep per "
                             f"budget, each with its own TINYLAB_HOME")
