"""Users drive tinylab with sliders and buttons in JupyterLab: prove it in a real Chromium.

Run with `make e2e` (installs Debian's chromium and playwright if missing), or
`TINYLAB_E2E=1 .venv/bin/python -m pytest tests/e2e -p no:nbval`. Skipped otherwise.

The probe tests check the harness itself on throw-away notebooks: a slider whose observer
prints into an Output must round-trip through the kernel, the same notebook with the observer
not wired must make that check fail, and a raising cell must fail Run All at once (so a pass
below means something). Then notebooks 01 and 05 are driven as a user would. Success
screenshots go to the artifacts dir (and to docs/img/ with TINYLAB_E2E_UPDATE_DOCS=1).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jlab
import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("TINYLAB_E2E") != "1",
                       reason="browser test: run `make e2e` (or set TINYLAB_E2E=1)"),
]

DOCS_IMG = jlab.REPO / "docs" / "img"


def write_notebook(path: Path, *sources: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def write_probe_notebook(path: Path, *, wired: bool) -> None:
    """IntSlider 'n' whose observer prints n² into an Output; wired=False skips observe()."""
    src = ("import ipywidgets as w\n"
           "s = w.IntSlider(value=3, min=0, max=10, description='n')\n"
           "out = w.Output()\n"
           "def show(change):\n"
           "    out.clear_output()\n"
           "    with out:\n"
           "        print(f'n squared = {change[\"new\"] ** 2}')\n"
           + ("s.observe(show, names='value')\n" if wired else "")
           + "show({'new': s.value})\n"
           "w.VBox([s, out])")
    write_notebook(path, src)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    write_probe_notebook(root / "wired.ipynb", wired=True)
    write_probe_notebook(root / "unwired.ipynb", wired=False)
    write_notebook(root / "raises.ipynb", "x = 1", "1 / 0", "print('never runs')")
    return root


def move_probe_slider(page, server, name: str, timeout: float) -> None:
    jlab.open_notebook(page, server, name)
    jlab.run_all(page, timeout=60)
    output = page.locator(".jp-OutputArea-output")
    jlab.wait_for_text(output, r"n squared = 9\b", timeout=30)
    jlab.press_slider(page, jlab.slider(page, "n"), "ArrowRight", times=2)
    jlab.wait_for_text(output, r"n squared = 25\b", timeout=timeout)


def test_probe_slider_round_trips_through_kernel(lab_server, probe_dir, e2e_page):
    move_probe_slider(e2e_page, lab_server(probe_dir), "wired.ipynb", timeout=20)


def test_probe_detects_unwired_callback(lab_server, probe_dir, e2e_page):
    with pytest.raises(AssertionError, match="n squared = 25"):
        move_probe_slider(e2e_page, lab_server(probe_dir), "unwired.ipynb", timeout=5)
    # the slider itself did move: only the callback was missing
    assert jlab.slider(e2e_page, "n").locator(".widget-readout").inner_text().strip() == "5"


def test_probe_reports_a_raising_cell(lab_server, probe_dir, e2e_page):
    """Run All stops at a raising cell; run_all must say so at once, not wait for the rest."""
    jlab.open_notebook(e2e_page, lab_server(probe_dir), "raises.ipynb")
    with pytest.raises(jlab.LabError, match="ZeroDivisionError"):
        jlab.run_all(e2e_page, timeout=60)


# ---- the notebooks -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def notebooks(tmp_path_factory):
    """A copy of notebooks/ to serve: Lab writes checkpoints next to what it opens, and the
    repo's notebooks must stay exactly as committed (the kernel still imports the repo)."""
    return shutil.copytree(jlab.REPO / "notebooks", tmp_path_factory.mktemp("lab") / "notebooks",
                           ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


def save_success_screenshot(page, name: str) -> None:
    """Always into the artifacts dir; into docs/img/ (the README's pictures) on request."""
    jlab.save_png(page, jlab.artifacts_dir() / f"{name}.png")
    if os.environ.get("TINYLAB_E2E_UPDATE_DOCS") == "1":
        jlab.save_png(page, DOCS_IMG / f"{name}.png")


def test_architecture_sliders_update_param_table(lab_server, notebooks, e2e_page):
    """Notebook 01: one step right on the depth slider -> the widget's table shows the new total."""
    from tinylab.calc import param_counts
    from tinylab.presets import get_preset

    page, smoke = e2e_page, get_preset("smoke")
    jlab.open_notebook(page, lab_server(notebooks), "01_architecture.ipynb")
    jlab.run_all(page, timeout=240)

    depth = jlab.slider(page, "depth")
    depth.scroll_into_view_if_needed()
    view = page.locator(".widget-vbox").filter(has=depth).first  # outermost: the whole view
    report = view.locator(".widget-output").first
    total = report.locator("table tr").filter(
        has=page.locator("th", has_text=re.compile(r"^total$"))).locator("td").first
    d0 = int(depth.locator(".widget-readout").inner_text())
    assert d0 == smoke.model.depth
    jlab.wait_for_text(total, rf"^{param_counts(smoke.model)['total']}$", timeout=30)
    figure = report.locator("img").first.get_attribute("src")

    jlab.press_slider(page, depth, "ArrowRight")
    assert depth.locator(".widget-readout").inner_text().strip() == str(d0 + 1)
    expected = param_counts(smoke.override(depth=d0 + 1).model)["total"]
    jlab.wait_for_text(total, rf"^{expected}$", timeout=30)
    assert report.locator("img").first.get_attribute("src") != figure, "the figure was not redrawn"
    jlab.collapse_left_sidebar(page)
    jlab.scroll_to_top(view)
    save_success_screenshot(page, "01_architecture")


def test_completion_widget_streams_text(lab_server, notebooks, e2e_page):
    """Notebook 05: type a prompt, click Generate -> the completion streams into the output area."""
    page = e2e_page
    jlab.open_notebook(page, lab_server(notebooks), "05_completion.ipynb")
    jlab.run_all(page, timeout=420)

    generate = page.get_by_role("button", name="Generate")
    view = page.locator(".widget-vbox").filter(has=generate).first  # the CompletionWidget
    view.scroll_into_view_if_needed()
    prompt_box, area = view.locator("textarea").first, view.locator(".widget-html").last
    prompt = "Once upon a time the little robot"
    prompt_box.click()
    prompt_box.press("Control+a")
    prompt_box.press_sequentially(prompt)
    # the Label beside the button: "generating…", then "N tokens, X tok/s"
    status = view.locator(".widget-hbox:has(> .widget-button) > .widget-label").first
    jlab.record_texts(area, "tinylabArea")
    jlab.record_texts(status, "tinylabStatus")

    generate.click()
    updates = jlab.wait_recorded(page, "tinylabStatus", r"\d+ tokens, [\d,.]+ tok/s", timeout=120)
    assert any("generating" in t for t in updates), f"the click started no generation: {updates}"
    shown = area.locator("span").first.inner_text()
    assert shown == prompt, f"the output area shows prompt {shown!r}, typed {prompt!r}"
    final = area.inner_text()
    assert final.startswith(prompt) and len(final.strip()) > len(prompt), \
        f"no completion after the prompt: {final!r}"
    texts = jlab.recorded_texts(page, "tinylabArea")
    partial = {t for t in texts if t.startswith(prompt) and len(t) > len(prompt)}
    assert len(partial) >= 2, f"the completion arrived in one piece, not streamed: {texts}"
    jlab.collapse_left_sidebar(page)
    jlab.scroll_to_top(view)
    save_success_screenshot(page, "05_completion")
