"""See where a tokenizer cuts text: each token a colored span, its id on hover.

`render_tokens` is the plain function (HTML string, usable headless); `token_view` wraps it in
a text box that re-renders on every edit.
"""
from __future__ import annotations

import html

PALETTE = ("#fde2e4", "#cde7f0", "#d8f3dc", "#fff1c1", "#e2d9f3", "#ffd8be")


def token_pieces(tok, text: str) -> list[tuple[list[int], str]]:
    """(ids, text) pieces: a token's bytes, merged with neighbours until they form whole
    characters, so a character split across byte tokens shows once, not as U+FFFD."""
    pieces, ids, buf = [], [], b""
    for i in tok.encode(text):
        ids.append(i)
        buf += tok.id_to_bytes(i)
        try:
            pieces.append((ids, buf.decode("utf-8")))
            ids, buf = [], b""
        except UnicodeDecodeError:
            continue
    if ids:
        pieces.append((ids, buf.decode("utf-8", "replace")))
    return pieces


def render_tokens(tok, text: str) -> str:
    """HTML with alternating background colors at token boundaries (spaces shown as ·)."""
    pieces, spans = token_pieces(tok, text), []
    for n, (ids, piece) in enumerate(pieces):
        shown = html.escape(piece).replace(" ", "·").replace("\n", "↵<br>")
        spans.append(f'<span title="{" ".join(map(str, ids))}" style="background:{PALETTE[n % len(PALETTE)]};'
                     f'padding:1px 0;border-radius:3px">{shown}</span>')
    n_tokens = sum(len(ids) for ids, _ in pieces)
    n_bytes = len(text.encode("utf-8", "replace"))
    return (f'<div style="font-family:monospace;line-height:1.8">{"".join(spans)}</div>'
            f'<div style="color:#666;font-size:small">{n_tokens} tokens, {n_bytes} bytes, '
            f'{n_bytes / max(n_tokens, 1):.2f} bytes/token ({tok.name})</div>')


def token_view(tok, text: str = "Hello world! tinylab trains tiny GPTs."):
    """A text area and its token rendering, updated as you type."""
    import ipywidgets as w
    box = w.Textarea(value=text, layout=w.Layout(width="100%"))
    out = w.HTML(render_tokens(tok, text))
    box.observe(lambda change: setattr(out, "value", render_tokens(tok, change["new"])), names="value")
    return w.VBox([box, out])
