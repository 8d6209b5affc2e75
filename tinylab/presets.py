"""Named presets: each one a partial assignment of the knobs declared in tinylab.config.

Every notebook's first cell calls `preset_from_env()`: a JupyterLab user gets the real
preset (`ittybitty`), while the tests and the main job set `TINYLAB_PRESET=smoke` so every
notebook runs in seconds on a CPU. A knob a preset does not assign keeps its declared default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .config import TrainConfig
from .errors import TinylabError

ENV_VAR = "TINYLAB_PRESET"
DEFAULT = "ittybitty"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    knobs: dict = field(default_factory=dict)   # knob name -> value; the rest keep their defaults

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(self.name).override(**self.knobs)


ITTYBITTY = dict(depth=4, model_dim=512, n_head=8, head_dim=64, vocab_size=24576, sequence_len=2048)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smoke", "seconds on a CPU: the test and main-job preset, trained on the bundled sample",
           dict(depth=2, model_dim=64, head_dim=32, vocab_size=512, sequence_len=128, corpus="sample", num_shards=0,
                tokenizer_max_chars=2_000_000, device_batch_size=8, total_batch_size=1024, target_tokens=120 * 1024,
                eval_every=40, eval_tokens=16_384, sample_every=120)),
    Preset("ittybitty", "the 37.75M target: depth 4, dim 512, 8 heads × 64, vocab 24,576 (1:1:1 split)", ITTYBITTY),
    Preset("ittybitty-tied", "ittybitty with wte and lm_head shared: 25.17M params",
           dict(ITTYBITTY, tie_embeddings=True)),
    Preset("seed15m", "what nanochat built from --depth=4: dim 256, 2 heads × 128 (15.73M params)",
           dict(ITTYBITTY, model_dim=256, n_head=2, head_dim=128, device_batch_size=32)),
]}


class UnknownPresetError(TinylabError, KeyError):
    """A preset name that is not in PRESETS; the message lists the valid ones."""


def get_preset(name: str) -> TrainConfig:
    """The full config of preset `name` (every knob resolved)."""
    try:
        return PRESETS[name].config
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; valid presets are: {', '.join(PRESETS)}") from None


def preset_from_env(default: str = DEFAULT) -> TrainConfig:
    """The preset named by $TINYLAB_PRESET, else `default` (the notebooks' parameters cell)."""
    return get_preset(os.environ.get(ENV_VAR) or default)


def resolve(preset: TrainConfig | str, overrides: dict | None = None) -> TrainConfig:
    """A preset (name or config) with keyword overrides applied (None = unchanged); validated."""
    config = get_preset(preset) if isinstance(preset, str) else preset
    return config.override(**(overrides or {}))
