"""The conda environment mirrors pyproject's dependencies, and CI runs README's test command."""
import re

import pytest

from tinylab.paths import REPO

tomllib = pytest.importorskip("tomllib")


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_lists_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {requirement_name(r) for r in project["dependencies"] + extras["dev"] + extras["hf"]}
    wanted.discard("triton")  # Linux-only test extra; conda users run that test only if they install it
    env = (REPO / "environment.yml").read_text().lower().replace("_", "-")
    listed = set(re.findall(r"^\s*- ([a-z0-9.-]+)", env, flags=re.M))
    assert wanted <= listed, f"missing from environment.yml: {sorted(wanted - listed)}"


def test_ci_runs_the_readme_test_command():
    readme, ci = (REPO / "README.md").read_text(), (REPO / ".ci" / "run").read_text()
    assert "make test    # the whole suite" in readme
    assert re.search(r"^make test$", ci, flags=re.M)
