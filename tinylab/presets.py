"""Named experiment presets: the single place where architectures and run sizes are defined.

Every notebook's first cell calls `preset_from_env()`: a JupyterLab user gets the real
preset (`ittybitty`), while the tests and the main job set `TINYLAB_PRESET=smoke` so every
notebook runs in seconds on a CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .config import GPTConfig

ENV_VAR = "TINYLAB_PRESET"
DEFAULT = "ittybitty"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: GPTConfig
    corpus: str = "fineweb"          # "sample" (bundled, offline) or "fineweb" (downloaded shards)
    num_shards: int = 15             # FineWeb-Edu shards to download (last one is validation)
    tokenizer_max_chars: int = 2_000_000_000
    device_batch_size: int = 48      # sequences per forward/backward on one device
    total_batch_size: int = 524_288  # tokens per optimizer step, across accumulation and ranks
    target_tokens: int = 500_000_000
    eval_every: int = 250            # steps between validation bpb evaluations
    eval_tokens: int = 10_485_760    # validation tokens per evaluation
    sample_every: int = 1000         # steps between sample generations

    @property
    def tokenizer_name(self) -> str:
        return f"{self.corpus}-{self.model.vocab_size}"

    def with_model(self, **knobs) -> "Preset":
        """The same preset with some architecture knobs changed (see GPTConfig.with_knobs)."""
        return replace(self, model=self.model.with_knobs(**knobs))


ITTYBITTY = GPTConfig(depth=4, model_dim=512, n_head=8, head_dim=64, vocab_size=24576, sequence_len=2048)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smoke", "seconds on a CPU: the test and main-job preset, trained on the bundled sample",
           GPTConfig(depth=2, model_dim=64, head_dim=32, vocab_size=512, sequence_len=128),
           corpus="sample", num_shards=0, tokenizer_max_chars=2_000_000, device_batch_size=8,
           total_batch_size=1024, target_tokens=120 * 1024, eval_every=40, eval_tokens=16_384,
           sample_every=120),
    Preset("ittybitty", "the 37.75M target: depth 4, dim 512, 8 heads × 64, vocab 24,576 (1:1:1 split)",
           ITTYBITTY),
    Preset("ittybitty-tied", "ittybitty with wte and lm_head shared: 25.17M params",
           replace(ITTYBITTY, tie_embeddings=True)),
    Preset("seed15m", "what nanochat built from --depth=4: dim 256, 2 heads × 128 (15.73M params)",
           GPTConfig(depth=4, model_dim=256, n_head=2, head_dim=128, vocab_size=24576, sequence_len=2048),
           device_batch_size=32),
]}


class UnknownPresetError(KeyError):
    def __str__(self):
        return self.args[0]


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; valid presets are: {', '.join(PRESETS)}") from None


def preset_from_env(default: str = DEFAULT) -> Preset:
    """The preset named by $TINYLAB_PRESET, else `default` (the notebooks' parameters cell)."""
    return get_preset(os.environ.get(ENV_VAR, default))
