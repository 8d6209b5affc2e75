"""Test-session settings shared by the unit tests and the notebooks nbval runs.

Set before any kernel starts, so every notebook sees them: the smoke preset (seconds on a
CPU), a fresh artifacts directory for the session, and a non-interactive plot backend.
"""
import os
import tempfile

os.environ["TINYLAB_PRESET"] = "smoke"
os.environ.setdefault("TINYLAB_HOME", tempfile.mkdtemp(prefix="tinylab-test-"))
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
