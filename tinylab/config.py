"""The GPT architecture as explicit knobs.

nanochat derives the whole architecture from depth (model_dim = 64·depth, head_dim = 128),
which is how a user asking for "depth 4, dim 512, 8 heads" got a 15.7M model instead of a
37.75M one. Here every dimension is a field; depth only supplies defaults for fields left
unset, and every illegal combination is refused with a message that names the fix.

This module imports no torch, so the calculators and the architecture notebook can use it
on any machine.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

ASPECT_RATIO = 64        # default model_dim = ASPECT_RATIO * depth (nanochat's rule)
DEFAULT_HEAD_DIM = 64    # tiny models want more, smaller heads than nanochat's 128
MLP_RATIO = 4            # hidden width of the ReLU² MLP


class ConfigError(ValueError):
    """An architecture that cannot be built; the message says which knob to change."""


@dataclass(frozen=True)
class GPTConfig:
    """A fully resolved architecture. Unset (None) fields get depth-based defaults.

    depth          number of transformer blocks
    model_dim      residual stream width (default 64·depth)
    n_head         query heads (default model_dim // head_dim)
    head_dim       width of one head (default 64, or model_dim // n_head when n_head is given)
    n_kv_head      key/value heads for grouped-query attention (default n_head: plain MHA)
    vocab_size     rows of wte and lm_head; must cover the tokenizer's vocabulary
    sequence_len   the training context; rotary tables are sized for it
    tie_embeddings share one matrix between wte and lm_head
    """

    depth: int = 4
    model_dim: int | None = None
    n_head: int | None = None
    head_dim: int | None = None
    n_kv_head: int | None = None
    vocab_size: int = 24576
    sequence_len: int = 2048
    tie_embeddings: bool = False

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ConfigError(msg)

        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "tie_embeddings":
                need(isinstance(v, bool), f"tie_embeddings must be True or False, got {v!r}")
            elif v is not None:
                need(isinstance(v, int) and not isinstance(v, bool), f"{f.name} must be an integer, got {v!r}")
        need(self.depth >= 1, f"depth must be >= 1, got {self.depth}")
        need(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}: use the tokenizer's vocab size")
        need(self.sequence_len >= 1, f"sequence_len must be >= 1, got {self.sequence_len}")

        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.model_dim is None:
            set_("model_dim", ASPECT_RATIO * self.depth)
        need(self.model_dim >= 1, f"model_dim must be >= 1, got {self.model_dim}")
        if self.head_dim is None:
            if self.n_head is None:
                set_("head_dim", min(DEFAULT_HEAD_DIM, self.model_dim))
            else:
                need(self.n_head >= 1, f"n_head must be >= 1, got {self.n_head}")
                need(self.model_dim % self.n_head == 0,
                     f"model_dim={self.model_dim} is not divisible by n_head={self.n_head}: "
                     f"pick n_head from {divisors(self.model_dim)} or set head_dim")
                set_("head_dim", self.model_dim // self.n_head)
        need(self.head_dim >= 1, f"head_dim must be >= 1, got {self.head_dim}")
        need(self.head_dim % 2 == 0,
             f"head_dim={self.head_dim} is odd, but rotary embeddings rotate pairs of channels: use an even head_dim")
        need(self.model_dim % self.head_dim == 0,
             f"model_dim={self.model_dim} is not divisible by head_dim={self.head_dim}: "
             f"use a model_dim that is a multiple of {self.head_dim}, or a head_dim from {even_divisors(self.model_dim)}")
        if self.n_head is None:
            set_("n_head", self.model_dim // self.head_dim)
        need(self.n_head * self.head_dim == self.model_dim,
             f"n_head × head_dim = {self.n_head} × {self.head_dim} = {self.n_head * self.head_dim} "
             f"must equal model_dim={self.model_dim}: give only two of the three")
        if self.n_kv_head is None:
            set_("n_kv_head", self.n_head)
        need(1 <= self.n_kv_head <= self.n_head,
             f"n_kv_head={self.n_kv_head} must be between 1 and n_head={self.n_head}")
        need(self.n_head % self.n_kv_head == 0,
             f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}: "
             f"grouped-query attention shares each kv head among an equal number of query heads; "
             f"pick n_kv_head from {divisors(self.n_head)}")

    @property
    def mlp_dim(self) -> int:
        return MLP_RATIO * self.model_dim

    def with_knobs(self, **knobs) -> "GPTConfig":
        """This config with some knobs changed (None leaves a knob as is), re-deriving the head layout.

        model_dim = n_head × head_dim, so changing one of the three keeps one other and derives
        the third: a new model_dim keeps head_dim (model_dim 768 on ittybitty: 12 heads of 64),
        a new head_dim or n_head keeps model_dim. n_kv_head goes back to n_head unless given.
        """
        knobs = {k: v for k, v in knobs.items() if v is not None}
        heads = {"model_dim", "head_dim", "n_head"} & set(knobs)
        if heads:
            if heads == {"model_dim"}:
                knobs["head_dim"] = self.head_dim
            elif len(heads) == 1:
                knobs["model_dim"] = self.model_dim
            for k in {"model_dim", "head_dim", "n_head"} - set(knobs):
                knobs[k] = None
            knobs.setdefault("n_kv_head", None)
        return replace(self, **knobs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown architecture fields {sorted(unknown)}; valid fields are {sorted(known)}")
        return cls(**d)

    def describe(self) -> str:
        tied = "tied" if self.tie_embeddings else "untied"
        kv = "" if self.n_kv_head == self.n_head else f", {self.n_kv_head} kv heads"
        return (f"depth {self.depth}, dim {self.model_dim}, {self.n_head} heads × {self.head_dim}{kv}, "
                f"vocab {self.vocab_size:,}, seq {self.sequence_len}, {tied} embeddings")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def even_divisors(n: int) -> list[int]:
    return [d for d in divisors(n) if d % 2 == 0]
