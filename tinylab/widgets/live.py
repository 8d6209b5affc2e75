"""A live loss plot for tinylab.train.train(callback=...): one figure, updated in place.

The callback keeps the records it is given (train loss, val bpb, samples) and redraws at
most every `every_s` seconds through one IPython display handle, so the notebook shows a
single image that changes rather than a stack of figures, and a headless run (nbval, a
script) just ends with the final static figure. Outside IPython it draws nothing.
"""
from __future__ import annotations

import time
from pathlib import Path

from matplotlib.figure import Figure


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class LiveLossPlot:
    """Callback for train(): train loss and val bpb against tokens, with an optional baseline line."""

    def __init__(self, baseline: float | None = None, every_s: float = 2.0, title: str | None = None):
        self.baseline, self.every_s, self.title = baseline, every_s, title
        self.train: list[tuple[int, float]] = []   # (tokens, loss)
        self.eval: list[tuple[int, float]] = []    # (tokens, val_bpb)
        self.samples: list[tuple[int, str]] = []   # (step, text)
        self.summary: dict | None = None
        self._handle, self._last = None, 0.0

    def __call__(self, rec: dict) -> None:
        kind = rec.get("kind")
        if kind == "train":
            self.train.append((rec["tokens"], rec["loss"]))
        elif kind == "eval":
            self.eval.append((rec["tokens"], rec["val_bpb"]))
        elif kind == "sample":
            self.samples.append((rec["step"], rec["text"]))
        elif kind == "done":
            self.summary = rec
            if not self.train and not self.eval:  # an already finished run: show its history
                self.load(Path(rec["run_dir"]) / "metrics.jsonl")
            self.draw()
            return
        if time.monotonic() - self._last >= self.every_s:
            self.draw()

    def load(self, metrics_path: Path) -> None:
        """Replay a run's metrics.jsonl (e.g. a finished run that train() did not need to redo)."""
        from ..run import read_jsonl  # skips a half-written last line (a run still logging)

        if Path(metrics_path).is_file():
            for rec in read_jsonl(Path(metrics_path)):
                if rec.get("kind") in ("train", "eval", "sample"):
                    self(rec)

    def figure(self) -> Figure:
        """The current plot as a standalone Figure (not registered with pyplot: no duplicate display)."""
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        if self.train:
            x, y = zip(*self.train)
            ax1.plot(x, y, lw=1.2)
        ax1.set(title="train loss", xlabel="tokens", ylabel="cross-entropy (nats/token)")
        if self.eval:
            x, y = zip(*self.eval)
            ax2.plot(x, y, "o-", ms=3, label="val bpb")
        if self.baseline is not None:
            ax2.axhline(self.baseline, color="gray", ls="--", lw=1, label=f"unigram {self.baseline:.3f}")
        ax2.set(title="validation", xlabel="tokens", ylabel="bits per byte")
        if self.eval or self.baseline is not None:
            ax2.legend(loc="upper right")
        if self.title:
            fig.suptitle(self.title)
        return fig

    def draw(self) -> None:
        self._last = time.monotonic()
        if not _in_ipython():
            return
        from IPython.display import display

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
