"""The layers import downward only: core <- operators <- adapters <- views <- corpus <- app."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ess_widgets"

# What each layer may import from the package (besides itself).
ALLOWED = {
    "core": set(),
    "operators": {"core"},
    "tasks": {"core", "operators"},
    "models": {"core", "operators", "tasks"},
    "adapters": {"core", "operators", "models", "tasks"},
    "views": {"core"},
    "corpus": {"core", "operators", "tasks", "models", "adapters", "views"},
    "app": {"core", "operators", "tasks", "models", "adapters", "views", "corpus"},
}


def _package_imports(path: Path, layer: str) -> set[str]:
    """Top-level ess_widgets subpackages imported by one module."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("ess_widgets."):
                found.add(node.module.split(".")[1])
            elif node.level == 2 and node.module:  # from ..core import x
                found.add(node.module.split(".")[0])
            elif node.level == 2:  # from .. import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ess_widgets."):
                    found.add(alias.name.split(".")[1])
    return found - {layer}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_downward(layer):
    folder = PACKAGE / layer
    if not folder.exists():
        pytest.skip(f"no {layer} layer yet")
    for path in folder.rglob("*.py"):
        bad = _package_imports(path, layer) - ALLOWED[layer]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)} (layer {layer})"


def test_core_uses_no_torch_nn_and_no_widgets():
    forbidden = ("torch.nn", "ipywidgets", "anywidget", "altair", "transformers")
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), f"core/{path.name} imports {name}"
