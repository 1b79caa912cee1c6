"""The app layer: what users start.

- ``Explorer``: live ESS of a language model on a text, one widget (``explorer``: the
  controls, the sync of traitlets and controls, the background thread). What it
  shows comes from ``dashboard`` (pure: state and layer data in, numbers and charts
  out); where the spectra come from, from ``sources`` (a model on a text, or arrays).
- ``show_operator``, ``show_attention``: the same dashboard on the user's own
  operators or attention maps (``standalone``).
- ``report``: the ESS report over the built-in example mixers (``python -m ess_widgets``).
"""

from .explorer import DEFAULT_TEXT, Explorer
from .standalone import show_attention, show_operator

__all__ = ["Explorer", "show_operator", "show_attention", "DEFAULT_TEXT"]
