"""``python -m ess_widgets``: the ``ess-widgets`` command (see ``ess_widgets.cli``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
