"""The app layer: what users start (the report now, the explorer next)."""
