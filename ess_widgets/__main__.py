"""``python -m ess_widgets``: the main job."""

from .app.report import main

if __name__ == "__main__":
    main()
