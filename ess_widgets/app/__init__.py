"""The app layer: what users start.

- ``Explorer``: live ESS of a language model on a text, one widget (``explorer``).
- ``show_operator``, ``show_attention``: the same dashboard on the user's own
  operators or attention maps (``standalone``).
- ``report``: the ESS report over the built-in example mixers (``python -m ess_widgets``).
"""

from .explorer import DEFAULT_TEXT, Explorer, load_model
from .standalone import show_attention, show_operator

__all__ = ["Explorer", "show_operator", "show_attention", "load_model", "DEFAULT_TEXT"]
