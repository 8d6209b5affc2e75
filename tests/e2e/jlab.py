"""Drive a real JupyterLab in a real Chromium, the way a user does: menus, sliders, buttons.

Why a browser at all: nbval runs the notebooks in a bare kernel, where a widget is only a
model and its callback is never wired to anything a user can touch. Here JupyterLab renders
the widgets, Chromium moves the slider and clicks the button, and the kernel's callback has to
come back through the comm channel into the DOM. Playwright drives the *system* Chromium
(`/usr/bin/chromium`, Debian's package): its own browser download needs the open internet.

Nothing in this module imports playwright at import time, so the default suite can collect
(and skip) the e2e tests without it being installed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TINYLAB_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: Chromium refuses to run as root otherwise (CI containers). The rest keeps it
# from phoning home: on a closed network those connections are refused and slow it down.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}

# JupyterLab user settings for a quiet, deterministic page: no news/update toasts over the
# widgets, no autosave (the page must never write a notebook back), no "Select Kernel" dialog,
# and every cell kept in the DOM (windowed notebooks drop off-screen cells).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none", "autoStartDefaultKernel": True},
}


class LabError(RuntimeError):
    """JupyterLab did not start, or a notebook did not run cleanly in it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A throw-away `jupyter lab` on 127.0.0.1 with a random token and its own settings/home.

    The kernel inherits this environment: the smoke preset, a fresh TINYLAB_HOME, and the repo
    on PYTHONPATH so the checkout under test is what the notebooks import. MPLBACKEND is
    dropped on purpose: the test session sets Agg, which would hide every inline figure.
    """

    def __init__(self, root_dir: Path, workdir: Path, *, timeout: float = 60):
        self.root_dir, self.workdir = Path(root_dir), Path(workdir)
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "jupyter-lab.log"
        settings = self.workdir / "lab-settings"
        for name, value in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env.update(TINYLAB_PRESET="smoke", TINYLAB_HOME=str(self.workdir / "tinylab-home"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
                   JUPYTER_PLATFORM_DIRS="1", HF_HUB_OFFLINE="1",
                   JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
                   JUPYTER_DATA_DIR=str(self.workdir / "data"),  # kernels still come from
                   JUPYTER_CONFIG_DIR=str(self.workdir / "config"))  # the venv (sys.prefix)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
               "--port", str(self.port), f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root_dir}",
               f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}",
               "--LabApp.extension_manager=readonly"]  # no PyPI queries from the page
        if os.geteuid() == 0:  # CI containers: Jupyter refuses root without this
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the server)
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root_dir, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"jupyter lab exited with {self.proc.returncode}; "
                               f"log: {self.log_path}\n{self.log_tail()}")
            try:
                req = urllib.request.Request(f"{self.url}/api/status",
                                             headers={"Authorization": f"token {self.token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise LabError(f"jupyter lab did not answer /api/status within {timeout:.0f} s; "
                       f"log: {self.log_path}\n{self.log_tail()}")

    def notebook_url(self, name: str) -> str:
        # ?reset: start from an empty workspace, not the tabs the previous test left open
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def launch_browser(playwright):
    """The system Chromium (-> Browser); give each test its own browser.new_context()."""
    if not Path(CHROMIUM).exists():
        raise LabError(f"{CHROMIUM} not found: install Debian's chromium "
                       "(`apt-get install -y chromium`) or set TINYLAB_CHROMIUM to a Chromium binary")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=os.environ.get("TINYLAB_E2E_HEADED") != "1")


# ---- what a user does in JupyterLab -------------------------------------------------------

ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"


def open_notebook(page, server: LabServer, name: str, timeout: float = 60) -> None:
    """Open a notebook and wait until its kernel is up and idle."""
    page.goto(server.notebook_url(name))
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").wait_for(
        timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)


def wait_kernel_idle(page, timeout: float) -> None:
    """Wait for the status bar to say '<kernel> | Idle' (a real kernel, not 'No Kernel').

    The toolbar's execution indicator reads 'idle' already before the kernel connects, and a
    Run All issued then is silently dropped, so this watches the status bar instead.
    """
    status = page.locator(".jp-StatusBar-TextItem", has_text=" | ")
    idle = re.compile(r"^(?!No Kernel).+ \| Idle$")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(idle.match(t.strip()) for t in status.all_inner_texts()):
            return
        page.wait_for_timeout(200)
    raise LabError(f"kernel not idle after {timeout:.0f} s: {status.all_inner_texts()}")


def menu(page, *path: str) -> None:
    """Click through the main menu bar, e.g. menu(page, 'Run', 'Run All Cells')."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{path[0]}$")).click()
    for label in path[1:]:
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(label)}$")).click()


def run_all(page, timeout: float = 300) -> None:
    """Run > Run All Cells; wait until every code cell has run; fail fast on a traceback."""
    menu(page, "Run", "Run All Cells")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    prompts = panel.locator(".jp-CodeCell .jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    while True:
        tracebacks = [t for t in panel.locator(ERROR_OUTPUT).all_inner_texts()
                      if "Traceback" in t or re.search(r"^\w+(Error|Exception)\b", t, re.MULTILINE)]
        if tracebacks:  # Run All stops at the failing cell: say why at once
            raise LabError("a cell raised in JupyterLab:\n" + tracebacks[0][-3000:])
        texts = [t.strip() for t in prompts.all_inner_texts()]
        if texts and all(re.fullmatch(r"\[\d+\]:", t) for t in texts):
            break
        if time.monotonic() > deadline:
            raise LabError(f"cells still not executed after {timeout:.0f} s: {texts}")
        page.wait_for_timeout(250)
    wait_kernel_idle(page, timeout)


def slider(page, description: str):
    """The ipywidgets slider whose description label reads `description`."""
    return page.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$")))


def press_slider(page, slider_locator, key: str, times: int = 1) -> None:
    """Move a slider like a keyboard user: focus its handle, press arrow keys."""
    handle = slider_locator.locator(".noUi-handle").first
    handle.click()
    for _ in range(times):
        handle.press(key)


def collapse_left_sidebar(page) -> None:
    """Click the open left-sidebar tab (the file browser) so the notebook gets the width."""
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab.count():
        tab.first.click()
        page.wait_for_timeout(300)


def scroll_to_top(locator) -> None:
    """Scroll the notebook so the element starts at the top of the view (for screenshots)."""
    locator.evaluate("el => el.scrollIntoView({block: 'start'})")
    locator.page.wait_for_timeout(300)


def wait_for_text(locator, pattern: str | re.Pattern, timeout: float) -> str:
    """Poll a locator's text until `pattern` matches it; return the text (or raise with it)."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = "\n".join(locator.all_inner_texts())
        if rx.search(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"no match for {rx.pattern!r} within {timeout:.0f} s; the text was:\n"
                         f"{text[-2000:]}")


def record_texts(locator, key: str) -> None:
    """Start keeping every text the element shows (read back with recorded_texts(page, key)).

    A MutationObserver in the page sees each update the kernel sends, however fast they come,
    so a test can tell a stream of partial texts from one final write.
    """
    locator.evaluate("""(el, key) => {
        window[key] = [];
        new MutationObserver(() => window[key].push(el.textContent))
            .observe(el, {childList: true, subtree: true, characterData: true});
    }""", key)


def recorded_texts(page, key: str) -> list[str]:
    return page.evaluate("key => window[key]", key)


def wait_recorded(page, key: str, pattern: str, timeout: float) -> list[str]:
    """Wait until a text recorded by record_texts matches `pattern`; return all texts so far."""
    rx, deadline = re.compile(pattern), time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = recorded_texts(page, key)
        if any(rx.search(t) for t in texts):
            return texts
        page.wait_for_timeout(200)
    raise AssertionError(f"no update matching {pattern!r} within {timeout:.0f} s; updates seen: "
                         f"{recorded_texts(page, key)[-20:]}")


def save_png(page, path: Path, *, full_page: bool = False) -> Path:
    """Screenshot, shrunk to a 256-colour palette PNG (a Lab page is mostly flat colour)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    page.screenshot(path=str(tmp), full_page=full_page)
    with Image.open(tmp) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            tmp, optimize=True)
    os.replace(tmp, path)
    return path


def artifacts_dir() -> Path:
    """$TINYLAB_E2E_ARTIFACTS, or one fresh temp dir per session (printed on failure)."""
    global ARTIFACTS
    if ARTIFACTS is None:
        if os.environ.get("TINYLAB_E2E_ARTIFACTS"):
            ARTIFACTS = Path(os.environ["TINYLAB_E2E_ARTIFACTS"])
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
        else:
            ARTIFACTS = Path(tempfile.mkdtemp(prefix="tinylab-e2e-"))
    return ARTIFACTS


ARTIFACTS: Path | None = None  # set by the first artifacts_dir() call


def copy_log(server: LabServer, dest: Path) -> None:
    shutil.copy(server.log_path, dest)
