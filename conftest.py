"""Test-session settings shared by the unit tests and the notebooks nbval runs.

Set before any kernel starts, so every notebook sees them: the smoke preset (seconds on a
CPU), the CPU as the device for everything that checks exact values (fp32, the same on a
machine with or without a GPU; tests marked `gpu` choose CUDA themselves), a fresh artifacts
directory for the session, and a non-interactive plot backend.
"""
import os
import tempfile

os.environ["TINYLAB_PRESET"] = "smoke"
os.environ["TINYLAB_DEVICE"] = "cpu"
os.environ.setdefault("TINYLAB_HOME", tempfile.mkdtemp(prefix="tinylab-test-"))
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
