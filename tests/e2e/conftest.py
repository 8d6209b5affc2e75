"""Fixtures for the browser tests: one JupyterLab server per notebook folder, one Chromium.

The e2e tests are off unless TINYLAB_E2E=1 (`make e2e` sets it); the default suite then only
collects and skips them, without importing playwright. On a failure the page is saved as a
screenshot + HTML next to the JupyterLab log, in $TINYLAB_E2E_ARTIFACTS or a temp dir, and the
path is printed in the failure report.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import jlab
import pytest

SERVERS: dict[Path, jlab.LabServer] = {}  # root_dir -> server, for the failure report


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: drives JupyterLab in a real Chromium "
                                       "(run with `make e2e` or TINYLAB_E2E=1)")


@pytest.fixture(scope="session")
def lab_server():
    """Factory: lab_server(root_dir) -> a running jlab.LabServer (one per root, per session)."""
    def start(root_dir: Path) -> jlab.LabServer:
        root_dir = Path(root_dir).resolve()
        if root_dir not in SERVERS:
            SERVERS[root_dir] = jlab.LabServer(root_dir,
                                               Path(tempfile.mkdtemp(prefix="tinylab-lab-")))
        return SERVERS[root_dir]

    yield start
    while SERVERS:  # logs of failed tests were already copied to the artifacts dir
        server = SERVERS.popitem()[1]
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium():
    """The system Chromium, driven by Playwright (a Browser)."""
    try:  # TINYLAB_E2E=1 asked for the browser test: a missing playwright fails, never skips
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.fail("playwright is not installed: `.venv/bin/pip install playwright` "
                    "(or run `make e2e`, which installs it)", pytrace=False)
    with sync_playwright() as pw:
        browser = jlab.launch_browser(pw)
        yield browser
        browser.close()


@pytest.fixture
def e2e_page(chromium):
    """A fresh page in its own browser context (no cookies or storage from other tests)."""
    context = chromium.new_context(viewport=jlab.VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed e2e test, keep what the user would have seen, and say where it is."""
    report = (yield).get_result()
    page = getattr(item, "funcargs", {}).get("e2e_page")
    if report.when != "call" or not report.failed or page is None:
        return
    out = jlab.artifacts_dir()
    lines = []
    try:
        lines.append(f"screenshot: {jlab.save_png(page, out / f'{item.name}-failure.png', full_page=True)}")
        (out / f"{item.name}-failure.html").write_text(page.content())
        lines.append(f"page html:  {out / f'{item.name}-failure.html'}")
    except Exception as e:  # noqa: BLE001 (a dead page must not hide the real failure)
        lines.append(f"(no screenshot: {e})")
    for i, server in enumerate(SERVERS.values()):
        dest = out / f"{item.name}-jupyter-lab-{i}.log"
        jlab.copy_log(server, dest)
        lines.append(f"lab log:    {dest}")
    report.sections.append(("tinylab e2e artifacts", "\n".join(lines)))


def pytest_terminal_summary(terminalreporter):
    if jlab.ARTIFACTS is not None:
        terminalreporter.write_line(f"tinylab e2e screenshots: {jlab.ARTIFACTS}")
