"""Corpus sweeps: the ESS of many texts, on one machine or a Ray cluster, as Parquet.

- ``sweep``: the ESS table of every text (``driver.py``), by the ``"local"`` engine
  or the ``"ray"`` engine (``ray_engine.py``); one shard is computed by
  ``compute.py``, written and read back by ``storage.py`` (layout, schema,
  metadata); ``texts.py`` turns lists and ``.txt`` / ``.jsonl`` files into shards.
- ``read_sweep``, ``read_texts``, ``read_failures``, ``sweep_settings``: the
  dataset back as pandas (or a lazy Arrow dataset).
- ``summaries``: mean ESS per layer and head with bootstrap intervals, ESS at
  token classes against the rest and around them, per-head distributions.
- ``views``: altair charts of those summaries (layer x head heatmap, per-head
  distributions, ESS around token classes).

Needs pyarrow (``pip install 'ess-widgets[corpus]'``); the Ray engine needs
``pip install 'ess-widgets[ray]'``.
"""

from .driver import DEFAULT_SHARD_SIZE, SweepResult, sweep
from .storage import read_failures, read_sweep, read_texts, sweep_settings
from .summaries import (
    TOKEN_CLASSES,
    around_token_class,
    dip_at_token_class,
    head_distributions,
    head_means,
    head_texts,
    token_class_ess,
    token_classes,
)

__all__ = [
    "sweep",
    "SweepResult",
    "DEFAULT_SHARD_SIZE",
    "read_sweep",
    "read_texts",
    "read_failures",
    "sweep_settings",
    "head_means",
    "token_class_ess",
    "around_token_class",
    "dip_at_token_class",
    "head_distributions",
    "head_texts",
    "token_classes",
    "TOKEN_CLASSES",
]
