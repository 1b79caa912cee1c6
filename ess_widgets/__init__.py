"""ess-widgets: measure how much memory a sequence model really uses (effective state-size)."""

from .adapters import LayerOperators, ModelHandle, builtin_models, load, supported_families
from .colab import colab_setup
from .core import (
    DeltaTransition,
    entropy_ess,
    ess_bound,
    normalize_splits,
    recurrence_bytes,
    recurrence_operator,
    recurrence_spectra,
    spectra,
    spectra_ref,
    tolerance_ess,
)

__version__ = "0.1.0"

# The app pulls in ipywidgets and altair: import it on first use only.
_APP = ("Explorer", "show_operator", "show_attention")
# Corpus sweeps need pyarrow (an extra): imported on first use too.
_CORPUS = ("sweep", "read_sweep")


def __getattr__(name):
    if name in _APP:
        from . import app

        return getattr(app, name)
    if name in _CORPUS:
        from . import corpus

        return getattr(corpus, name)
    if name == "CorpusExplorer":
        from .app.corpus_explorer import CorpusExplorer

        return CorpusExplorer
    raise AttributeError(f"module 'ess_widgets' has no attribute {name!r}")


__all__ = [
    "spectra",
    "spectra_ref",
    "recurrence_spectra",
    "recurrence_operator",
    "recurrence_bytes",
    "DeltaTransition",
    "normalize_splits",
    "tolerance_ess",
    "entropy_ess",
    "ess_bound",
    "load",
    "builtin_models",
    "supported_families",
    "ModelHandle",
    "LayerOperators",
    "Explorer",
    "show_operator",
    "show_attention",
    "colab_setup",
    "sweep",
    "read_sweep",
    "CorpusExplorer",
]
