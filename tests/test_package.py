"""The package's shape: imports point one way, no module is shadowed by a function, heavy
dependencies load lazily, and nothing in it speaks of how it is built."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import rnn_dynamics as rd

PKG = pathlib.Path(rd.__file__).parent


def _module_imports(path: pathlib.Path) -> set[str]:
    """Package modules imported at module level (not inside functions) by one file."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in tree.body:  # top level only: imports inside functions are lazy by design
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rnn_dynamics."))
    return out


def test_no_import_cycles():
    mods = {p.stem: p for p in PKG.glob("*.py")}
    graph = {name: {m for m in _module_imports(p) if m in mods and m != name} for name, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(stack + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in graph[m]:
            visit(d, stack + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    # the bottom layers import nothing of the package
    assert graph["_cell"] == set() and graph["_checks"] <= {"_cell"}


def test_no_public_function_shares_its_name_with_a_module():
    modules = {p.stem for p in PKG.glob("*.py")}
    functions = {n for n in rd.__all__ if callable(getattr(rd, n)) and not isinstance(getattr(rd, n), type(rd))}
    assert not functions & modules, functions & modules


def test_import_is_light_and_reports_its_time():
    code = (
        "import time, sys; t = time.perf_counter(); import rnn_dynamics; "
        "print(time.perf_counter() - t); print(','.join(m for m in ('matplotlib', 'flax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    print(f"import rnn_dynamics (with jax): {float(out[0]):.2f} s")
    assert out[1] == "", f"imported eagerly: {out[1]}"


def test_the_project_speaks_of_itself():
    root = PKG.parent
    words = ("issue", "session", "lent")  # ("task" is the ML word here: rd.tasks)
    files = [p for d in ("rnn_dynamics", "benchmarks", "notebooks") for p in (root / d).rglob("*")
             if p.suffix in {".py", ".md", ".ipynb", ".toml"}]
    files += [root / "README.md", root / "pyproject.toml"]
    bad = []
    for p in files:
        text = p.read_text(errors="ignore").lower()
        bad += [f"{p.relative_to(root)}: {w}" for w in words if f" {w} " in text or f" {w}s " in text]
    assert not bad, bad
