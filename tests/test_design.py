"""The codebase's own rules, checked: one declaration per knob that reaches every consumer, no import
circles, short functions, one exception root, and notebooks that show each figure once."""
import ast
import inspect
import json
from pathlib import Path

import pytest

import tinylab
from tinylab.config import GROUPS, TrainConfig, add_knob_arguments, knob_arguments, knob_names
from tinylab.errors import ArgumentParser, TinylabError
from tinylab.paths import REPO

PACKAGE = Path(tinylab.__file__).parent
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name, parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its body (functions included)."""
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from . import calc` imports a module; `from .calc import x` the module calc
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                if target in known and target != name:
                    out.add(target)
    return out


def test_there_are_no_import_circles():
    mods = modules()
    graph = {name: imports(name, tree, set(mods)) for name, tree in mods.items()}
    assert graph["tinylab.train"] >= {"tinylab.run", "tinylab.config"}  # the walker sees real imports
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_every_function_fits_on_a_screen():
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, tree in modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_every_folder_tinylab_keeps_in_its_home_is_in_paths_managed():
    # export --force refuses to replace these (paths.MANAGED), so a new one must be listed there
    import re

    from tinylab.paths import MANAGED

    source = "\n".join(p.read_text() for p in sorted(PACKAGE.rglob("*.py")))
    used = set(re.findall(r'(?<!Path\.)\bhome\(\) / "([^"]+)"', source)) | set(re.findall(r'subdir\("([^"]+)"', source))
    assert {"runs", "fineweb", "notebooks"} <= used and used <= set(MANAGED)


def test_every_error_class_derives_from_the_one_root():
    import importlib
    import pkgutil

    classes = set()
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="tinylab."):
        module = importlib.import_module(info.name)
        classes |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, Exception) and not issubclass(c, Warning) and c.__module__.startswith("tinylab")}
    assert len(classes) >= 14
    assert [c.__qualname__ for c in classes if not issubclass(c, TinylabError)] == []


def test_every_knob_reaches_the_cli_config_json_and_the_run_table():
    from tinylab.runs import CONFIG_COLUMNS, config_columns

    names = knob_names()
    assert len(names) == len(set(names)) >= 30
    parser = ArgumentParser(prog="t")
    add_knob_arguments(parser)
    flags = {a.dest for a in parser._actions}
    assert set(names) <= flags
    defaults = TrainConfig().flat()
    given = {n: v for n, v in defaults.items() if v is not None}
    argv = []
    for n, v in given.items():
        argv += [f"--{n.replace('_', '-')}"] if v is True else [f"--no-{n.replace('_', '-')}"] if v is False \
            else [f"--{n.replace('_', '-')}", str(v)]
    assert knob_arguments(parser.parse_args(argv)) == given  # each flag parses back to its knob's value
    sections = TrainConfig().to_dict()
    assert set(sections) == {g.group for g in GROUPS}
    assert sorted(k for s in sections.values() for k in s) == sorted(names)
    assert set(names) <= set(CONFIG_COLUMNS)
    row = config_columns(json.loads(json.dumps(dict(sections, run="r"))), "r")
    assert {n: row[n] for n in names} == defaults


def test_a_knobs_kind_comes_from_its_annotation_and_nothing_else():
    from dataclasses import dataclass, field

    from tinylab.config import ConfigError, Knobs, knob_type

    @dataclass(frozen=True)
    class Group(Knobs):
        steps: int = 1
        lr: float | None = None
        tied: bool = False
        corpus: str = "sample"

    assert [knob_type(Group, n) for n in ("steps", "lr", "tied", "corpus")] == [
        (int, False), (float, True), (bool, False), (str, False)]
    assert Group(lr=1).lr == 1.0 and isinstance(Group(lr=1).lr, float)  # an int passes as a float
    import numpy as np

    numpy_values = Group(steps=np.int64(3), lr=np.float32(0.5), tied=np.True_)  # np.arange, a DataFrame's values
    assert (numpy_values.steps, numpy_values.lr, numpy_values.tied) == (3, 0.5, True)
    assert [type(v) for v in (numpy_values.steps, numpy_values.lr, numpy_values.tied)] == [int, float, bool]
    with pytest.raises(ConfigError, match="steps must be an integer"):
        Group(steps=True)

    @dataclass(frozen=True)
    class Bad(Knobs):
        sizes: list = field(default_factory=list)

    with pytest.raises(TypeError, match="sizes is annotated"):
        Bad()


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_show_each_figure_once(notebook):
    """A widget and its headless twin would draw the same figure twice in JupyterLab: the twin is a
    separate cell, tagged `nbval` and collapsed there (nbval still runs and checks it)."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", []) and "preset_from_env()" in "".join(cells[0]["source"])
    for c in cells:
        kinds = {k for o in c.get("outputs", []) for k in o.get("data", {})}
        if "application/vnd.jupyter.widget-view+json" in kinds:
            assert not kinds & {"image/png", "text/html"}, "".join(c["source"])
        if "nbval" in c["metadata"].get("tags", []):
            assert c["metadata"]["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
