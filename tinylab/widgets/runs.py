"""Choose runs and an x axis, see their curves overlaid (notebook 04).

`show_runs` is the plain function (load + plot, returns the Figure, usable headless);
`runs_view` wraps it in a run picker, an x-axis dropdown and log-scale boxes that re-plot
(into an Image widget) on every change. A run that cannot be read shows its message in place of the plot.
"""
from __future__ import annotations

import html
import io

from ..plots import X_AXES, plot_runs
from ..runs import RunError, find_runs, load_runs


def show_runs(runs, x: str = "step", logx: bool = False, logy: bool = False, smooth: float | None = None):
    """Figure of `runs` (names or run directories) against `x`; what the widget draws."""
    return plot_runs(load_runs(runs), x=x, logx=logx, logy=logy, smooth=smooth)


def runs_view(selected=None, runs=None, x: str = "step"):
    """Widget: pick among `runs` (default: every run found), `selected` initially shown."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    names = list(runs if runs is not None else find_runs())
    pick = w.SelectMultiple(options=names, value=tuple(selected if selected is not None else names),
                            rows=min(max(len(names), 2), 8), description="runs",
                            layout=w.Layout(width="420px"))
    axis = w.Dropdown(options=[(label, key) for key, label in X_AXES.items()], value=x, description="x axis")
    logx, logy = w.Checkbox(description="log x"), w.Checkbox(description="log y (loss, bpb)")
    message = w.HTML()
    image = w.Image(format="png", layout=w.Layout(max_width="100%"))

    def redraw(_=None):
        # a PNG in an Image widget, not plt.show(): updates in place, and works without a kernel
        message.value, image.layout.display = "", None
        if not pick.value:
            message.value, image.layout.display = "select at least one run", "none"
            return
        try:
            fig = show_runs(list(pick.value), x=axis.value, logx=logx.value, logy=logy.value)
        except RunError as e:
            message.value, image.layout.display = f"<pre>{html.escape(str(e))}</pre>", "none"
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        image.value = buf.getvalue()

    for control in (pick, axis, logx, logy):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([pick, w.VBox([axis, logx, logy])]), message, image])
