"""Training batches from a corpus pre-tokenized once into uint16 token shards (tinylab.tokens), memory-mapped.

Design, and why:
- Tokenize once, not on the fly. Training reads the same tokens for every run of every
  preset that shares a tokenizer, and reading a memory map costs nothing next to BPE
  encoding, so the loader can never starve the GPU. Measured on an H100 host (16 cores):
  pre-tokenization runs at ~13M tok/s using every core (docs/benchmarks.md §3), ~6× ittybitty's
  ~2.3M tok/s consumption, but on the fly it would take those cores from the training process
  in every run, while the memory-mapped loader delivers ~600M tok/s to the GPU.
  Exact resume is also simpler when batches are a pure function of a position.
  `pretokenize` writes $TINYLAB_HOME/tokens/<corpus>-<tokenizer.hash[:12]>/shard_NNNNN.bin
  (raw uint16, one per parquet shard; vocab ≤ 65,536 so ids fit in 2 bytes, half of int32)
  and meta.json (token counts, source sizes and footers, which shards form each split). One .bin per
  source shard means downloading more shards only tokenizes the new ones, and runs of another
  num_shards (another validation shard) share them. Files are written atomically; a rerun skips
  shards already done and re-tokenizes any whose source changed (size or parquet footer).
- Documents are concatenated, each with BOS prepended (`Tokenizer.encode_concat`, the ids of
  `encode_batch(..., prepend_bos=True)`), so every document starts with BOS. A training row may span
  documents (as in nanoGPT and nanochat's loaders): the model learns that BOS resets context; nothing
  is padded or wasted.
- The split is a stream of rows: row j of a shard is tokens [j·T, j·T + T + 1) (the +1 is the
  last target), so consecutive rows share one token and every token but a shard's first is a
  target once per epoch (a shard's tail shorter than a row is dropped). Rows are numbered
  across the split's shards and the stream repeats them epoch after epoch.
- A micro-batch of all ranks together takes the next B·W rows; rank r gets the r-th group of
  B, so ranks see disjoint data that covers the whole. When those rows lie in one shard (almost
  always), a rank's B rows are one contiguous window of B·T + 1 tokens: x = w[:-1].view(B, T),
  y = w[1:].view(B, T), one copy to the device.
- The position is a single number, the rows consumed by all ranks together, so it does not
  depend on B or on the number of ranks: a run stopped by an out-of-memory error resumes with
  a smaller device batch (same tokens per step, more accumulation) on exactly the same token
  stream. The state also records the split it belongs to (a mismatch is refused, e.g. a shard
  replaced, or under num_shards 0 more shards downloaded).
- On CUDA the int64 window is pinned (PyTorch caches pinned host blocks, so this is cheap)
  and copied with non_blocking=True; x and y are views of one device tensor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import data
from .tokens import LoaderError, pretokenize, read_meta

STATE_FORMAT = 2  # loader state: rows consumed (1 counted batches of a fixed B and world size)


class TokenLoader:
    """Iterator of (x, y) int64 (B, T) batches over a pre-tokenized split; see module docstring.

    infinite=True (training) cycles epochs forever; infinite=False stops after one epoch. shards: the split's shard
    names (stems) of the caller's config; default: the split pretokenize was last asked for (meta.json's `splits`).
    """

    def __init__(self, tokens: str | Path, split: str, batch_size: int, seq_len: int, *, rank: int = 0,
                 world_size: int = 1, device: str | torch.device = "cpu", state: dict | None = None,
                 infinite: bool = True, shards: list[str] | None = None):
        self.dir, self.split, self.B, self.T = Path(tokens), split, int(batch_size), int(seq_len)
        self.rank, self.world_size, self.device, self.infinite = rank, world_size, torch.device(device), infinite
        if not 0 <= rank < world_size:
            raise LoaderError(f"rank must be in [0, {world_size}), got {rank}")
        if self.B < 1 or self.T < 1:
            raise LoaderError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        self.shards = self._open_shards(read_meta(self.dir), shards)
        rows = [max(0, (len(mm) - 1) // self.T) for mm in self.shards]
        self._row_start = np.cumsum([0] + rows)  # global index of each shard's first row
        self.rows_per_epoch = int(self._row_start[-1])
        if self.rows_per_epoch < self.B * world_size:
            raise LoaderError(f"the {split!r} split ({sum(map(len, self.shards)):,} tokens in {len(self.shards)} "
                              f"shard(s)) has fewer than {world_size} window(s) of B×T+1 = {self.B * self.T + 1:,} "
                              f"tokens; lower batch_size or seq_len, or use more data")
        self.rows = self._epoch_end = 0  # rows consumed by all ranks together: the position in the stream
        self.load_state_dict(state or dict(format=STATE_FORMAT, rows=0))

    def _open_shards(self, meta: dict, names: list[str] | None) -> list[np.ndarray]:
        names = meta.get("splits", {}).get(self.split) if names is None else names
        missing = [s for s in names or () if s not in meta.get("shards", {})]
        if names is None or missing:
            raise LoaderError(f"no pre-tokenized {self.split!r} split{f' ({missing[0]})' if missing else ''} in "
                              f"{self.dir}; run pretokenize(corpus, tokenizer, {self.split!r})")
        self.bos_id = meta["bos_id"]
        shards = []
        for s in names:
            n = meta["shards"][s]["tokens"]
            mm = np.memmap(self.dir / f"{s}.bin", dtype=np.uint16, mode="r") if n else np.zeros(0, np.uint16)
            if len(mm) != n:
                raise LoaderError(f"{self.dir / s}.bin has {len(mm)} tokens, meta.json says {n}; delete "
                                  f"{self.dir} to re-tokenize")
            shards.append(mm)
        return shards

    @property
    def epoch(self) -> int:
        return self.rows // self.rows_per_epoch

    @property
    def batches_per_epoch(self) -> int:
        """Whole micro-batches (of all ranks together) in one pass over the split."""
        return self.rows_per_epoch // (self.B * self.world_size)

    def state_dict(self) -> dict:
        return dict(format=STATE_FORMAT, rows=self.rows, seq_len=self.T, split=self.split, tokens=self.dir.name,
                    split_tokens=int(sum(map(len, self.shards))))

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        if "split_tokens" in state and state["split_tokens"] != mine["split_tokens"]:
            raise LoaderError(f"the {self.split!r} split held {state['split_tokens']:,} tokens when this position was "
                              f"saved and holds {mine['split_tokens']:,} now: its shards changed (replaced, another "
                              f"num_shards, or with num_shards 0 more were downloaded or some removed). Put them back "
                              f"as they were, with the run's num_shards, to resume, or train a new run")
        for key in ("seq_len", "split", "tokens"):
            if key in state and state[key] != mine[key]:
                raise LoaderError(f"loader state was saved with {key}={state[key]!r} but this loader has "
                                  f"{mine[key]!r}; resume with the same settings or start the data over")
        rows = state["rows"] if state.get("format") == STATE_FORMAT else self._rows_of_v1(state)
        if not isinstance(rows, int) or rows < 0:
            raise LoaderError(f"loader state has a bad position {rows!r}; start the data over")
        self.rows = rows
        self._epoch_end = (rows // self.rows_per_epoch + 1) * self.rows_per_epoch  # where infinite=False stops

    def _rows_of_v1(self, state: dict) -> int:
        """The position of a format-1 state ({epoch, batch} of windows of B·T+1 within shards).

        Exact within the first epoch; later epochs start a few dropped rows apart, so the
        position is that of the same window in the current epoch."""
        B, W = state["batch_size"], state["world_size"]
        windows = [(i, k * B) for i, mm in enumerate(self.shards) for k in range(max(0, (len(mm) - 1) // (B * self.T)))]
        done = state["batch"] * W
        row = self.rows_per_epoch if done >= len(windows) else int(self._row_start[windows[done][0]]) + windows[done][1]
        return state["epoch"] * self.rows_per_epoch + row

    def rows_window(self, first: int, count: int | None = None) -> np.ndarray:
        """`count` (default B) rows of the stream from global row `first` as a (count, T+1) uint16 array, or
        their contiguous count·T+1 tokens when they lie in one shard (wrapping at the epoch end)."""
        count = self.B if count is None else count
        g = (first + np.arange(count)) % self.rows_per_epoch
        shard = np.searchsorted(self._row_start, g, side="right") - 1
        local = g - self._row_start[shard]
        if shard[0] == shard[-1] and local[-1] - local[0] == count - 1:  # one contiguous window
            start = int(local[0]) * self.T
            return self.shards[shard[0]][start:start + count * self.T + 1]
        return np.stack([self.shards[s][j * self.T:(j + 1) * self.T + 1] for s, j in zip(shard, local)])

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.B * self.world_size
        if not self.infinite and self.rows + step > self._epoch_end:
            raise StopIteration
        w = self.rows_window(self.rows + self.rank * self.B)
        self.rows += step
        return self.to_batch(w)

    def to_batch(self, w: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) on the device from a rows_window."""
        buf = torch.from_numpy(w.astype(np.int64))
        if self.device.type == "cuda":
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            buf = buf.to(self.device)
        if buf.ndim == 1:
            return buf[:-1].view(-1, self.T), buf[1:].view(-1, self.T)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


def token_batches(preset, tokenizer, split: str = "train", *, batch_size: int | None = None, device="cpu",
                  rank: int = 0, world_size: int = 1, state: dict | None = None, progress: bool = True) -> TokenLoader:
    """pretokenize + TokenLoader in one call: endless (x, y) batches of the preset's corpus.

    batch_size defaults to preset.batch.device_batch_size, seq_len is preset.model.sequence_len.
    Save `loader.state_dict()` in checkpoints and pass it back as `state` to resume exactly.
    Under DDP call it on every rank (pretokenize is atomic and idempotent; rank 0 first then a
    barrier avoids duplicate work).
    """
    corpus, num_shards = preset.data.corpus, preset.data.num_shards
    shards = [p.stem for p in data.list_shards(corpus, split, num_shards)]  # before pretokenize: it tokenizes them all
    tokens = pretokenize(corpus, tokenizer, split, num_shards=num_shards, progress=progress and rank == 0)
    batch_size = preset.batch.device_batch_size if batch_size is None else batch_size
    return TokenLoader(tokens, split, batch_size, preset.model.sequence_len,
                       rank=rank, world_size=world_size, device=device, state=state, shards=shards)


def val_batches(preset, tokenizer, *, batch_size: int | None = None, device="cpu", rank: int = 0,
                world_size: int = 1, max_tokens: int | None = None, progress: bool = True):
    """A fresh, deterministic pass over validation: the same batches on every call (see val_pass)."""
    loader = token_batches(preset, tokenizer, "val", batch_size=batch_size, device=device, rank=rank,
                           world_size=world_size, progress=progress)
    return val_pass(loader, preset.eval.eval_tokens if max_tokens is None else max_tokens)


def val_pass(loader: TokenLoader, max_tokens: int):
    """One evaluation pass over `loader`'s split (its position is left alone): the same rows on every call.

    The pass covers the split's first max_tokens // T rows (at least one per rank, at most one epoch),
    cut into equal contiguous blocks, one per rank, read B rows at a time (the last batch may be
    smaller). Which rows those are does not depend on B, so a run resumed at another device batch
    size measures val bpb on the very same tokens. Training evaluates many times: keeping one val
    TokenLoader skips pretokenize's directory scan and the memmap setup on every eval."""
    W, B, T = loader.world_size, loader.B, loader.T
    share = max(1, min(max_tokens // T, loader.rows_per_epoch) // W)
    first = loader.rank * share
    for start in range(first, first + share, B):
        x, y = loader.to_batch(loader.rows_window(start, min(B, first + share - start)))
        if len(x) < B < share:  # a short last batch is padded with ignored rows (target -1): one shape per pass,
            x = torch.cat([x, x.new_zeros(B - len(x), T)])  # so that a model compiled by its caller never compiles
            y = torch.cat([y, y.new_full((B - len(y), T), -1)])  # a second graph for it (~13 s)
        yield x, y
