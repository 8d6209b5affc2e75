"""The completion playground of notebook 05: type a prompt, press Generate, watch it stream.

All the work is `tinylab.engine.complete`; the widget only reads its controls, streams the
text into an HTML area (prompt gray, completion in the normal color) and shows tokens/s.
`CompletionWidget.generate()` is the button's callback and also works headless.
"""
from __future__ import annotations

import html

import ipywidgets as W

from ..engine import GenerationError, check_seed, check_settings, complete

PROMPT_STYLE = "color:#888"
AREA_STYLE = "white-space:pre-wrap;font-family:monospace;border:1px solid #ddd;padding:6px;min-height:4em"


def render(prompt: str, completion: str) -> str:
    """HTML for the output area: escaped prompt in gray followed by the completion."""
    return (f'<div style="{AREA_STYLE}"><span style="{PROMPT_STYLE}">{html.escape(prompt)}</span>'
            f"{html.escape(completion)}</div>")


class CompletionWidget(W.VBox):
    def __init__(self, model, tokenizer, prompt: str = "The capital of France is", *, temperature: float = 0.8,
                 top_k: int = 50, max_tokens: int = 100, seed: int = 42):
        check_settings(temperature, top_k or None, None, max_tokens)  # as generate() would, before any control
        if check_seed(seed) is None:  # shows a value it would silently change
            raise GenerationError("the widget's seed is a number in its seed box: give an integer, e.g. 42")
        self.model, self.tokenizer = model, tokenizer
        self.prompt = W.Textarea(value=prompt, placeholder="type a prompt", layout=W.Layout(width="100%", height="6em"))
        wide = dict(style={"description_width": "initial"})
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=max(2.0, temperature), step=0.05,
                                         description="temperature",
                                         tooltip="0 = greedy", **wide)
        self.top_k = W.IntSlider(value=top_k, min=0, max=max(top_k, min(500, tokenizer.vocab_size)),
                                 description="top-k", tooltip="0 = no limit", **wide)
        self.max_tokens = W.IntSlider(value=max_tokens, min=1, max=max(max_tokens, min(1000, model.config.sequence_len)),
                                      description="max tokens", **wide)
        self.seed = W.IntText(value=seed, description="seed", **wide)
        self.button = W.Button(description="Generate", button_style="primary", icon="play")
        self.output = W.HTML(render("", ""))
        self.speed = W.Label("")
        self.button.on_click(self.generate)
        controls = W.HBox([W.VBox([self.temperature, self.top_k]), W.VBox([self.max_tokens, self.seed])])
        super().__init__([self.prompt, controls, W.HBox([self.button, self.speed]), self.output])

    def generate(self, _=None):
        """Complete the current prompt with the current settings, streaming into the output area."""
        prompt, shown = self.prompt.value, []

        def on_text(piece: str):
            shown.append(piece)
            self.output.value = render(prompt, "".join(shown))

        self.button.disabled, self.speed.value = True, "generating…"
        try:
            result = complete(self.model, self.tokenizer, prompt, temperature=self.temperature.value,
                              top_k=self.top_k.value or None, max_tokens=self.max_tokens.value,
                              seed=self.seed.value, on_text=on_text)
        except GenerationError as e:
            self.speed.value, self.output.value = f"error: {e}", render(prompt, "")  # not the last completion
            return None
        finally:
            self.button.disabled = False
        self.output.value = render(prompt, result.text)
        self.speed.value = (f"{len(result.token_ids)} tokens, {result.tok_per_s:,.1f} tok/s "
                            f"({result.finish_reason})")
        return result
