"""Every knob of a tinylab run, declared once: name, type, default, one-line help, group.

nanochat derives the whole architecture from depth (model_dim = 64·depth, head_dim = 128),
which is how a user asking for "depth 4, dim 512, 8 heads" got a 15.7M model instead of a
37.75M one. Here every dimension is a field; depth only supplies defaults for fields left
unset, and every illegal combination is refused with a message that names the fix.

The groups are frozen dataclasses, one field per knob (`knob(default, help)`), like nanoGPT's
one-block configuration: model (GPTConfig), data, batch, loop, optim and eval. A TrainConfig
holds one of each. Everything else is derived from these declarations: the argparse flags of
every CLI that takes knobs (add_knob_arguments below), override resolution (`TrainConfig.override`),
the sections of a run's config.json (`to_dict` / `from_dict`), the run table's columns
(`knob_names()`), and the sliders of notebook 01 (their defaults come from a preset). Adding
a knob is one line in its group. A preset (tinylab.presets) is a named partial assignment of
these fields.

This module imports no torch, so the calculators and the architecture notebook can use it
on any machine.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import get_args, get_type_hints

from .errors import TinylabError

ASPECT_RATIO = 64        # default model_dim = ASPECT_RATIO * depth (nanochat's rule)
DEFAULT_HEAD_DIM = 64    # tiny models want more, smaller heads than nanochat's 128
MLP_RATIO = 4            # hidden width of the ReLU² MLP
ALIASES = {"seq_len": "sequence_len"}  # the CLI's and the notebooks' short name for sequence_len
MIN_VOCAB = 257          # 256 byte tokens + BOS: the smallest BPE tinylab.tokenizer can train
MAX_VOCAB = 2 ** 16      # token shards store uint16 ids (tinylab.loader)


class ConfigError(TinylabError, ValueError):
    """A knob value that cannot work (an illegal architecture, a negative batch); the message says which to change."""


def knob(default, help: str, *, minimum=None, maximum=None, choices=None, flag: str | None = None):
    """A dataclass field that is a user-facing knob: its default, its help line and its legal range."""
    return field(default=default, metadata=dict(help=help, minimum=minimum, maximum=maximum, choices=choices,
                                                flag=flag))


class Knobs:
    """Base of the knob groups: checks every field's type and range after construction."""

    def __post_init__(self):
        for f in fields(self):
            value = _coerce(f.name, *knob_type(type(self), f.name), getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            _check_range(f, value)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown {cls.group} knobs {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


MAX_SEED = 2**64 - 1  # the largest seed torch's generators take
KIND_WORDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}


@cache
def knob_type(group, name: str) -> tuple[type, bool]:
    """A knob's kind (bool, int, float or str) and whether it may be None, from its field's annotation."""
    hint = get_type_hints(group)[name]
    kinds = [t for t in get_args(hint) or (hint,) if t is not type(None)]
    if len(kinds) != 1 or kinds[0] not in KIND_WORDS:
        raise TypeError(f"knob {name} is annotated {hint}: a knob is one of bool, int, float, str, optionally | None")
    return kinds[0], hint is not kinds[0]


def _coerce(name: str, kind: type, optional: bool, value):
    """value checked against its knob's kind (optionally None); ints pass as floats."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set ({KIND_WORDS[kind]})")
    if kind is bool and getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy's bool (a DataFrame's)
        value = bool(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and kind in (int, float):
        value = kind(value)  # numpy's integers too (np.arange, a DataFrame column); an int passes as a float
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)) and kind is float:
        value = float(value)  # numpy's float32
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {KIND_WORDS[kind]}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return value


def _check_range(f, value) -> None:
    m = f.metadata
    if value is None or not m:
        return
    if m["minimum"] is not None and value < m["minimum"]:
        raise ConfigError(f"{f.name} must be >= {m['minimum']}, got {value!r}: {m['help']}")
    if m["maximum"] is not None and value > m["maximum"]:
        raise ConfigError(f"{f.name} must be <= {m['maximum']}, got {value!r}: {m['help']}")
    if m["choices"] is not None and value not in m["choices"]:
        raise ConfigError(f"{f.name} must be one of {', '.join(map(str, m['choices']))}; got {value!r}")


# ------------------------------------------------------------------------------- model

HEAD_KNOBS = ("model_dim", "n_head", "head_dim")  # model_dim = n_head × head_dim: two determine the third
# which other head knob a lone new one keeps when a config was given all three (a preset's): a new width keeps
# the head size (model_dim 768 on ittybitty: 12 heads of 64), a new head size or count keeps the width
KEEPS = {"model_dim": ("head_dim", "n_head"), "head_dim": ("model_dim", "n_head"), "n_head": ("model_dim", "head_dim")}


@dataclass(frozen=True)
class GPTConfig(Knobs):
    """A fully resolved architecture. Unset (None) fields get defaults; a knob given always wins over a default.

    model_dim = n_head × head_dim, so any two of the three determine the third; all three may be given
    only if they agree. Given alone, model_dim gets heads of 64 (or one head, when narrower), and n_head
    or head_dim gets model_dim = 64 × depth; given none, 64 × depth in heads of 64. n_kv_head defaults
    to n_head. The fields left unset are remembered (`_defaulted`), so `with_knobs` derives them again.
    """

    group = "model"
    depth: int = knob(4, "number of transformer blocks", minimum=1)
    model_dim: int | None = knob(None, "residual stream width (default n_head × head_dim, else 64 × depth)",
                                 minimum=1)
    n_head: int | None = knob(None, "query heads (default model_dim / head_dim)", minimum=1)
    head_dim: int | None = knob(None, "width of one head (default 64, or model_dim / n_head)", minimum=1)
    n_kv_head: int | None = knob(None, "key/value heads for grouped-query attention (default n_head)")
    vocab_size: int = knob(24576, "rows of wte and lm_head: the tokenizer's vocabulary size", minimum=1)
    sequence_len: int = knob(2048, "training context in tokens", minimum=1, maximum=2 ** 20, flag="seq-len")
    tie_embeddings: bool = knob(False, "share one matrix between wte and lm_head")

    def __post_init__(self):
        super().__post_init__()
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("_defaulted", frozenset(f.name for f in fields(self) if getattr(self, f.name) is None))
        _need(self.head_dim is None or self.head_dim % 2 == 0,
              f"head_dim={self.head_dim} is odd, but rotary embeddings rotate pairs of channels: use an even head_dim")
        if self.model_dim is None:
            set_("model_dim", self._default_model_dim())
        if self.model_dim % 2:
            raise ConfigError(self._odd_model_dim())
        if self.head_dim is None:
            set_("head_dim", self._default_head_dim())
        _need(self.model_dim % self.head_dim == 0,
              f"model_dim={self.model_dim} is not divisible by head_dim={self.head_dim}: use a model_dim that is "
              f"a multiple of {self.head_dim}, or a head_dim from {even_divisors(self.model_dim)}")
        if self.n_head is None:
            set_("n_head", self.model_dim // self.head_dim)
        _need(self.n_head * self.head_dim == self.model_dim,
              f"n_head × head_dim = {self.n_head} × {self.head_dim} = {self.n_head * self.head_dim} "
              f"must equal model_dim={self.model_dim}: give only two of the three")
        if self.n_kv_head is None:
            set_("n_kv_head", self.n_head)
        _need(1 <= self.n_kv_head <= self.n_head, f"n_kv_head={self.n_kv_head} must be between 1 and n_head={self.n_head}")
        _need(self.n_head % self.n_kv_head == 0,
              f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}: grouped-query attention "
              f"shares each kv head among an equal number of query heads; pick n_kv_head from {divisors(self.n_head)}")

    def _default_model_dim(self) -> int:
        if self.n_head is not None and self.head_dim is not None:
            return self.n_head * self.head_dim  # the two given heads determine the width
        return ASPECT_RATIO * self.depth

    def _odd_model_dim(self) -> str:
        """An odd model_dim's error, naming the two nearest model_dims that the given heads (or the default) split."""
        if self.head_dim is not None:
            step, unit = self.head_dim, f"multiples of head_dim={self.head_dim}"
        elif self.n_head is not None:
            step, unit = 2 * self.n_head, f"{self.n_head} heads of an even width"
        elif self.model_dim > DEFAULT_HEAD_DIM:
            step, unit = DEFAULT_HEAD_DIM, f"multiples of the default head_dim {DEFAULT_HEAD_DIM}"
        else:
            step, unit = 2, "one head as wide as the model, the default below 64"
        below = self.model_dim // step * step
        near = " or ".join(str(m) for m in (below, below + step) if m)
        return (f"model_dim={self.model_dim} is odd, but it is n_head × head_dim and rotary embeddings need an even "
                f"head_dim (they rotate pairs of channels): use an even model_dim, e.g. {near} ({unit})")

    def _default_head_dim(self) -> int:
        if self.n_head is None:
            return min(DEFAULT_HEAD_DIM, self.model_dim)  # model_dim is even here, so is this
        heads = [h for h in divisors(self.model_dim) if self.model_dim // h % 2 == 0]  # those giving even heads
        _need(self.model_dim % self.n_head == 0, f"model_dim={self.model_dim} is not divisible by "
                                                 f"n_head={self.n_head}: pick n_head from {heads} or set head_dim")
        head_dim = self.model_dim // self.n_head
        _need(head_dim % 2 == 0, f"model_dim / n_head = {self.model_dim} / {self.n_head} = {head_dim} is an odd "
                                 f"head_dim, but rotary embeddings rotate pairs of channels: pick n_head from "
                                 f"{heads} or set head_dim")
        return head_dim

    @property
    def mlp_dim(self) -> int:
        return MLP_RATIO * self.model_dim

    @property
    def fusable_rope_norm(self) -> bool:
        """Can tinylab.kernels' fused rotary + QK-norm run it? Its tl.arange needs head_dim/2 a power of two."""
        half = self.head_dim // 2
        return half & (half - 1) == 0

    def with_knobs(self, **knobs) -> "GPTConfig":
        """This config with some knobs changed (None leaves a knob as is): the config built from the knobs
        given to this one, updated by `knobs`. What this one defaulted is derived again, so a new depth moves
        a defaulted model_dim (GPTConfig().with_knobs(depth=8) == GPTConfig(depth=8)) and keeps a given one.

        Of model_dim, n_head and head_dim at most two stay given: one new head knob keeps the other one
        that was given (of two, the one KEEPS names) and derives the third, two new ones derive the third.
        When one of the three is given, n_kv_head goes back to n_head unless given too.
        """
        knobs = {ALIASES.get(k, k): v for k, v in knobs.items() if v is not None}
        unknown = set(knobs) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown architecture knobs {sorted(unknown)}; valid: {[f.name for f in fields(self)]}")
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._defaulted}
        new_heads = [k for k in HEAD_KNOBS if k in knobs]
        if new_heads:
            kept = [k for k in KEEPS[new_heads[0]] if k in given][:1] if len(new_heads) == 1 else []
            for k in (set(HEAD_KNOBS) - set(new_heads) - set(kept)) | {"n_kv_head"}:
                given.pop(k, None)
        return type(self)(**given | knobs)

    def describe(self) -> str:
        tied = "tied" if self.tie_embeddings else "untied"
        kv = "" if self.n_kv_head == self.n_head else f", {self.n_kv_head} kv heads"
        return (f"depth {self.depth}, dim {self.model_dim}, {self.n_head} heads × {self.head_dim}{kv}, "
                f"vocab {self.vocab_size:,}, seq {self.sequence_len}, {tied} embeddings")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def even_divisors(n: int) -> list[int]:
    return [d for d in divisors(n) if d % 2 == 0]


# ------------------------------------------------------------------------------- the other groups

@dataclass(frozen=True)
class DataConfig(Knobs):
    group = "data"
    corpus: str = knob("fineweb", "training text: sample (bundled, offline) or fineweb (downloaded shards)",
                       choices=("sample", "fineweb"))
    num_shards: int = knob(15, "shards of the corpus to use, the first N by name (0: every shard present); the last "
                               "is validation. `python -m tinylab.data download -n N` fetches FineWeb's", minimum=0)
    tokenizer_max_chars: int = knob(2_000_000_000, "characters the tokenizer is trained on", minimum=1,
                                    flag="max-chars")

    def __post_init__(self):
        super().__post_init__()
        if self.num_shards == 1:  # refused here, before anything is written, rather than when the shards are read
            raise ConfigError("num_shards=1 leaves no shard to train on besides the validation shard: give 0 (every "
                              "shard present) or at least 2 (train + val)")


@dataclass(frozen=True)
class BatchConfig(Knobs):
    group = "batch"
    device_batch_size: int = knob(48, "sequences per forward/backward on one device", minimum=1)
    total_batch_size: int = knob(524_288, "tokens per optimizer step, across accumulation and GPUs", minimum=1)


LENGTH_KNOBS = ("target_tokens", "num_iterations")  # what sets a run's length; num_iterations decides if both are set


@dataclass(frozen=True)
class LoopConfig(Knobs):
    group = "loop"
    target_tokens: int = knob(500_000_000, "training tokens; sets num_iterations when that is not given", minimum=1)
    num_iterations: int | None = knob(None, "optimizer steps (default: target_tokens / total_batch_size)", minimum=1)
    seed: int = knob(42, "seed of the weight initialisation", minimum=0, maximum=MAX_SEED)
    log_every: int = knob(10, "steps between loss read-backs and train lines in metrics.jsonl", minimum=1)
    save_every: int | None = knob(None, "steps between checkpoints (default: eval_every; 0: only the last)",
                                  minimum=0)
    compile: bool | None = knob(None, "torch.compile the model (default: on CUDA only)")
    compile_regions: bool = knob(True, "compile one graph per region (the stem, the head, one block reused by every "
                                       "layer) instead of the whole model: about half the cold compile time")
    fp8_lm_head: bool = knob(False, "lm_head's training GEMMs in FP8 where the device has them (NVIDIA sm_89+; "
                                    "CPUs with torch's FP8 GEMMs, slower than fp32 there); else unchanged")
    wandb: bool = knob(False, "also log to Weights & Biases (needs `pip install wandb`)")


@dataclass(frozen=True)
class OptimConfig(Knobs):
    group = "optim"
    embedding_lr: float = knob(0.2, "AdamW learning rate of wte", minimum=0.0)
    unembedding_lr: float = knob(0.004, "AdamW learning rate of lm_head", minimum=0.0)
    matrix_lr: float = knob(0.02, "Muon learning rate of the block matrices", minimum=0.0)
    tied_lr: float | None = knob(None, "AdamW learning rate of a tied wte = lm_head (default: unembedding_lr)",
                                 minimum=0.0)
    weight_decay: float = knob(0.0, "AdamW weight decay", minimum=0.0)
    warmup_ratio: float = knob(0.0, "fraction of steps with a linear learning-rate warmup", minimum=0.0, maximum=1.0)
    warmdown_ratio: float = knob(0.2, "fraction of steps with a linear warmdown at the end", minimum=0.0,
                                 maximum=1.0)
    final_lr_frac: float = knob(0.0, "learning rate at the end, as a fraction of the base rate", minimum=0.0,
                                maximum=1.0)
    grad_clip: float = knob(0.0, "clip the global gradient norm to this (0: off)", minimum=0.0)


@dataclass(frozen=True)
class EvalConfig(Knobs):
    group = "eval"
    eval_every: int = knob(250, "steps between validation bits-per-byte evaluations", minimum=1)
    eval_tokens: int = knob(10_485_760, "validation tokens per evaluation", minimum=1)
    sample_every: int = knob(1000, "steps between sample generations (0: never)", minimum=0)
    core_every: int = knob(0, "steps between CORE evaluations (0: never); needs the eval bundle", minimum=0)
    core_max_per_task: int = knob(500, "examples per CORE task in training's evaluations (nanochat's)", minimum=1)
    probes_every: int = knob(0, "steps between grammar-probe evaluations (0: never)", minimum=0)


GROUPS = (GPTConfig, DataConfig, BatchConfig, LoopConfig, OptimConfig, EvalConfig)


def knob_fields() -> dict[str, tuple[type, object]]:
    """Every knob by name: (its group class, its dataclass field), in declaration order."""
    return {f.name: (g, f) for g in GROUPS for f in fields(g)}


def knob_names() -> list[str]:
    return list(knob_fields())


def unknown_knob(name: str) -> ConfigError:
    """The error for a knob name that does not exist, naming the closest valid ones."""
    import difflib

    valid = knob_names() + sorted(ALIASES)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return ConfigError(f"unknown knob {name!r}{hint}; valid knobs: {', '.join(valid)}")


def check_knob(name: str, value):
    """`value` checked against knob `name` alone (its declared type and range) and returned coerced
    (an integer for a float knob becomes a float). Combinations are checked when a config is built."""
    name = ALIASES.get(name, name)
    if name not in knob_fields():
        raise unknown_knob(name)
    group, f = knob_fields()[name]
    value = _coerce(name, *knob_type(group, name), value)
    _check_range(f, value)
    return value


TRUE_WORDS, FALSE_WORDS, NONE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


def parse_knob(name: str, text: str):
    """A knob's value from command-line text, by its declared type: true/false for a flag, an integer
    (5e7 is accepted: it is one), a number, a string, or none for a knob that may be left unset."""
    name = ALIASES.get(name, name)
    if name not in knob_fields():
        raise unknown_knob(name)
    group, _ = knob_fields()[name]
    (kind, optional), word = knob_type(group, name), text.strip()
    if word.lower() in NONE_WORDS and optional:
        return None
    try:
        if kind is bool:
            if word.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            value = word.lower() in TRUE_WORDS
        elif kind is int:
            number = float(word)
            if not number.is_integer():
                raise ValueError
            value = int(word) if word.lstrip("+-").isdigit() else int(number)
        else:
            value = kind(word)
    except (ValueError, OverflowError):
        unset = " or none" if optional else ""
        raise ConfigError(f"{name}={text!r}: give {name} {KIND_WORDS[kind]}{unset}") from None
    return check_knob(name, value)


# ------------------------------------------------------------------------------- a whole run

@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, by group; `name` is the preset it came from."""

    name: str = "custom"
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def tokenizer_name(self) -> str:
        return f"{self.data.corpus}-{self.model.vocab_size}"

    def override(self, **knobs) -> "TrainConfig":
        """This config with knobs changed by name (None = unchanged); an unknown name lists the valid ones."""
        knobs = {ALIASES.get(k, k): v for k, v in knobs.items() if v is not None}
        table = knob_fields()
        unknown = set(knobs) - set(table)
        if unknown:
            raise ConfigError(f"unknown knob(s) {sorted(unknown)}; valid: {sorted(table) + sorted(ALIASES)}")
        by_group: dict[str, dict] = {}
        for name, value in knobs.items():
            by_group.setdefault(table[name][0].group, {})[name] = value
        changed = {g: replace(getattr(self, g), **kv) for g, kv in by_group.items() if g != "model"}
        return replace(self, model=self.model.with_knobs(**by_group.get("model", {})), **changed)

    def to_dict(self) -> dict:
        """The config.json sections: one dict of knobs per group."""
        return {g.group: getattr(self, g.group).to_dict() for g in GROUPS}

    @classmethod
    def from_dict(cls, d: dict, name: str = "custom") -> "TrainConfig":
        return cls(name, **{g.group: g.from_dict(d.get(g.group, {})) for g in GROUPS})

    def flat(self) -> dict:
        """Every knob by name (the run table's columns)."""
        return {k: v for section in self.to_dict().values() for k, v in section.items()}

    def __post_init__(self):
        o = self.optim
        if o.warmup_ratio + o.warmdown_ratio > 1:
            raise ConfigError(f"warmup_ratio + warmdown_ratio = {o.warmup_ratio} + {o.warmdown_ratio} is more than 1: "
                              f"the warmup and the warmdown would overlap; lower one of them")
        v = self.model.vocab_size
        if not MIN_VOCAB <= v <= MAX_VOCAB:
            raise ConfigError(f"vocab_size={v:,} cannot be trained here: the tokenizer needs at least {MIN_VOCAB} ids "
                              f"(256 bytes + BOS) and token shards store uint16 ids (at most {MAX_VOCAB:,}); "
                              f"choose a vocab_size between {MIN_VOCAB} and {MAX_VOCAB:,}")


# ------------------------------------------------------------------------------- command lines

def add_knob_arguments(parser, groups=GROUPS, only=None) -> None:
    """One --flag per knob of `groups` (or just the knobs named in `only`); default None = "not given",
    so the preset's value stays and an explicit 0 is a value like any other."""
    import argparse

    for g in groups:
        section = parser.add_argument_group(f"{g.group} knobs (default: the preset's)")
        for f in (f for f in fields(g) if only is None or f.name in only):
            (kind, _), m = knob_type(g, f.name), f.metadata
            names = [f"--{f.name.replace('_', '-')}"] + ([f"--{m['flag']}"] if m["flag"] else [])
            if kind is bool:
                section.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                     help=m["help"])
                continue
            section.add_argument(*names, dest=f.name, type=_whole_number(f.name) if kind is int else kind, default=None,
                                 choices=m["choices"], metavar=None if m["choices"] else kind.__name__.upper(),
                                 help=m["help"])


def _whole_number(name: str):
    """An int knob's argparse type: parse_knob's reading, so --target-tokens 5e8 works as a sweep grid's 5e8 does."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = parse_knob(name, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if value is None:  # "none" unsets a knob in a grid; a flag left out already does that here
            raise argparse.ArgumentTypeError(f"{name}={text!r}: give {name} an integer, or leave the flag out")
        return value
    return parse


def knob_arguments(args, groups=GROUPS) -> dict:
    """The knobs given on a command line parsed with add_knob_arguments (0 counts as given)."""
    return {f.name: getattr(args, f.name) for g in groups for f in fields(g)
            if getattr(args, f.name, None) is not None}
