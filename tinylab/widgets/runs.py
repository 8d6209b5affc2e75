"""Choose runs and an x axis, see their curves overlaid (notebook 04).

`show_runs` is the plain function (load + plot, returns the Figure, usable headless);
`runs_view` wraps it in a run picker, an x-axis dropdown and log-scale boxes that re-plot
(into an Image widget) on every change. A run that cannot be read shows its message in place of the plot.
"""
from __future__ import annotations

import html
import io

from ..plots import X_AXES, check_x, plot_runs
from ..runs import RunError, as_list, find_runs, load_runs, no_runs

LISTED = 12  # run names an error message lists before "... and N more" (a home may hold hundreds of sweep points)


def show_runs(runs, x: str = "step", logx: bool = False, logy: bool = False, smooth: float | None = None):
    """Figure of `runs` (names or run directories) against `x`; what the widget draws."""
    return plot_runs(load_runs(runs), x=x, logx=logx, logy=logy, smooth=smooth)


def choices(selected=None, runs=None) -> tuple[list, list]:
    """The runs the picker offers and those it starts with (each given as one name or a list of them).

    Checked here because ipywidgets would refuse them deep inside with a TraitError: a picker needs a run to
    offer, and can only start with runs it offers."""
    names = list(dict.fromkeys(find_runs() if runs is None else as_list(runs)))
    if not names:
        raise no_runs()
    shown = names if selected is None else list(dict.fromkeys(as_list(selected)))
    missing = [s for s in shown if s not in names]
    if missing:
        offered = ", ".join(map(str, names[:LISTED])) + (f", ... and {len(names) - LISTED} more" if len(names) > LISTED
                                                          else "")
        raise RunError(f"selected run{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                       f"{'are' if len(missing) > 1 else 'is'} not among the runs to pick from ({offered}): "
                       f"select some of those, or pass runs=[...] that include it")
    return names, shown


def runs_view(selected=None, runs=None, x: str = "step"):
    """Widget: pick among `runs` (default: every run found), `selected` initially shown (default: all of them).

    runs and selected take one run name or a list of them; x is one of tinylab.plots.X_AXES."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    names, shown = choices(selected, runs)
    check_x(x)
    pick = w.SelectMultiple(options=names, value=tuple(shown),
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
