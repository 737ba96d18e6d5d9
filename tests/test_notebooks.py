"""Every notebook in notebooks/ runs top to bottom (RND_FAST=1) and was committed executed.

The notebooks check the lectures' claims with ``assert`` against closed forms, so an error in
any cell is a failed claim. Executed with nbclient in a fresh python3 kernel, cwd notebooks/.
"""
from __future__ import annotations

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
# Paths outside the repository (the sources the notebooks cite are named, not linked): a
# relative path that climbs out of notebooks/.., or the absolute location of this checkout or of
# the user's home. Neither cell sources nor saved outputs may contain one.
REPO = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN_SOURCE = ("../", str(REPO), str(pathlib.Path.home()) + "/")
FORBIDDEN_OUTPUT = FORBIDDEN_SOURCE


def _read(path):
    return nbformat.read(str(path), as_version=4)


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_executed_and_self_contained(path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cells"
    unexecuted = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were never executed; run the notebook and save it with its outputs"
    assert any(c.outputs for c in code), f"{path.name}: saved without outputs"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: saved with an error output: {errors[0].get('ename')}"
    for i, cell in enumerate(nb.cells):
        outputs = [o.get("text", "") or str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
        for bad in FORBIDDEN_SOURCE:
            assert bad not in cell.source, f"{path.name}, cell {i}: mentions {bad!r}, a path outside the repository"
        for bad in FORBIDDEN_OUTPUT:
            assert not any(bad in t for t in outputs), f"{path.name}, cell {i}: an output shows {bad!r}, a path outside the repository"
    assert any("import rnn_dynamics as rd" in c.source for c in code), f"{path.name}: does not use the public API"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("RND_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _read(path)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # the message holds the failing cell and traceback
        pytest.fail(f"{path.name} failed with RND_FAST=1:\n{e}", pytrace=False)
