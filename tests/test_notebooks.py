"""The notebooks in notebooks/: stored clean, open in Colab, and run top to bottom.

Static checks (fast): every notebook is valid nbformat 4, has an "Open in Colab" badge
pointing at itself, opens with the same Colab install cell (it installs from the
repository named in pyproject.toml's [project.urls] and calls ``colab_setup()``) that does
nothing outside Colab, and is stored without outputs (so no stored tracebacks and small
diffs).

Execution: every notebook runs in a fresh ipykernel of this interpreter (the venv's),
offline (HF_HUB_OFFLINE=1), from a temporary copy of notebooks/, and fails on the first
cell error. Notebooks assert their own known answers, so a run checks real values.
Notebooks that load the built-in language model are marked ``slow``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _repository_url() -> str:
    """``Repository`` of [project.urls] in pyproject.toml: the one place the URL is kept."""
    text = (ROOT / "pyproject.toml").read_text()
    urls = text.split("[project.urls]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^Repository\s*=\s*"([^"]+)"', urls, re.M).group(1)


REPOSITORY = _repository_url()
COLAB_REPO = REPOSITORY.removeprefix("https://github.com/")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_GUARD = re.compile(r"""^if\s+["']google\.colab["']\s+in\s+sys\.modules\s*:""", re.M)
PIP = re.compile(r"(^|\W)(%pip|!pip|pip\s+install|-m\s*\W*pip|pip\()", re.M)
CELL_TIMEOUT_S = 600  # generous: the 2 CPU cores of a CI machine may be shared
MODEL_MARK = "smollm2-135m"


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _params(marks_for_model: bool):
    params = []
    for path in NOTEBOOKS:
        marks = []
        if marks_for_model and any(MODEL_MARK in c.source for c in _code_cells(_read(path))):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert "01_ess_basics.ipynb" in names, names
    assert "03_state_modulation.ipynb" in names, names


# ------------------------------------------------------------------------ static checks
@pytest.mark.parametrize("path", _params(False))
def test_valid_nbformat(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", _params(False))
def test_stored_without_outputs(path):
    """Outputs are cleared before saving: small diffs, and no stored tracebacks."""
    nb = _read(path)
    for k, cell in enumerate(_code_cells(nb)):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {k} stores a traceback"
            text = str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
            assert "Traceback (most recent call last)" not in text, f"cell {k} stores a traceback"
        assert cell.get("outputs", []) == [], f"code cell {k} has stored outputs: clear them"
        assert cell.get("execution_count") is None, f"code cell {k} has an execution count"
    assert "widgets" not in nb.metadata, "widget state is stored: save without outputs"


@pytest.mark.parametrize("path", _params(False))
def test_colab_badge(path):
    nb = _read(path)
    first = next(cell for cell in nb.cells if cell.cell_type == "markdown")
    link = f"https://colab.research.google.com/github/{COLAB_REPO}/blob/main/notebooks/{path.name}"
    assert BADGE_IMAGE in first.source, "the first markdown cell needs the Colab badge"
    assert f"({link})" in first.source, f"the badge must link to this notebook: {link}"


def _install_cells(nb):
    return [c for c in _code_cells(nb) if "google.colab" in c.source]


@pytest.mark.parametrize("path", _params(False))
def test_install_cell_only_on_colab(path, monkeypatch):
    """One install cell, before the package is imported, guarded so that it does nothing here."""
    nb = _read(path)
    cells = _code_cells(nb)
    install = _install_cells(nb)
    assert len(install) == 1, "expected one Colab install cell (mentioning google.colab)"
    cell = install[0]
    first_import = next(
        (
            k
            for k, c in enumerate(cells)
            if c is not cell and re.search(r"^\s*(from|import)\s+ess_widgets", c.source, re.M)
        ),
        len(cells),
    )
    assert cells.index(cell) < first_import, (
        "the install cell must come before `import ess_widgets`"
    )
    assert COLAB_GUARD.search(cell.source), 'guard it with `if "google.colab" in sys.modules:`'
    # Every statement that installs something sits inside the guard.
    from IPython.core.inputtransformer2 import TransformerManager

    source = TransformerManager().transform_cell(cell.source)  # %pip / !pip -> Python
    tree = ast.parse(source)
    for node in tree.body:
        segment = ast.get_source_segment(source, node) or ""
        guarded = isinstance(node, ast.If) and "google.colab" in ast.unparse(node.test)
        if not guarded:
            assert not PIP.search(segment) and "get_ipython" not in segment, (
                f"installs outside the Colab guard: {segment!r}"
            )
    # Run it here: with google.colab absent it must neither install nor import anything.
    assert "google.colab" not in sys.modules

    def refuse(*args, **kwargs):
        raise AssertionError(f"the install cell ran a command outside Colab: {args!r}")

    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(os, "system", refuse)

    class NoIPython:
        def __getattr__(self, name):
            raise AssertionError(f"the install cell used IPython ({name}) outside Colab")

    exec(compile(source, f"{path.name}:install", "exec"), {"get_ipython": NoIPython})


def test_one_install_cell_for_every_notebook():
    """The same cell everywhere: the repository of pyproject.toml, then colab_setup()."""
    cells = {path.name: _install_cells(_read(path))[0].source for path in NOTEBOOKS}
    first = cells[NOTEBOOKS[0].name]
    for name, source in cells.items():
        assert source == first, f"{name}'s install cell differs from {NOTEBOOKS[0].name}'s"
    assert f'REPOSITORY = "{REPOSITORY}"' in first
    assert 'f"ess-widgets @ git+{REPOSITORY}"' in first
    assert "ess_widgets.colab_setup()" in first


@pytest.mark.parametrize("path", _params(False))
def test_no_pip_outside_install_cell(path):
    nb = _read(path)
    for k, cell in enumerate(_code_cells(nb)):
        if "google.colab" not in cell.source:
            assert not PIP.search(cell.source), f"code cell {k} installs packages"


# ------------------------------------------------------------------------ execution
@pytest.mark.parametrize("path", _params(True))
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # This interpreter's kernelspec first: the kernel runs sys.executable (the venv's).
    monkeypatch.setenv(
        "JUPYTER_PATH",
        os.pathsep.join(
            [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]
        ).rstrip(os.pathsep),
    )
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = _read(work / path.name)
    probe = nbformat.v4.new_code_cell("import sys; print(sys.prefix)")
    nb.cells.insert(0, probe)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - start
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    print(f"{path.name}: executed in {elapsed:.1f} s, kernel sys.prefix = {kernel_prefix}")
    assert Path(kernel_prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the kernel ran in {kernel_prefix}, not in this interpreter's {sys.prefix}"
    )
    for k, cell in enumerate(_code_cells(nb)):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {k}: {out.get('ename')}"
