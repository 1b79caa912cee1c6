"""The ESS paper's other experiments: shipped results and the task models' names.

- ``paper_path(name)``: a results CSV of ``scripts/paper_experiments.py`` shipped in
  the package (``tasks_results``, ``copy_hard_results``, ``regularizer_results``,
  ``init_results``, ``distill_results``, ``distill_correlations``).
- ``task_model_name(task, family, state, num_items)``: the built-in name of a model
  trained on selective copying (``copy-...``) or compression (``compress-...``),
  e.g. ``copy-gla-dk4-n6`` (``-n12``: the harder copying setting);
  ``task_model_names()`` lists the shipped ones and
  ``load_task_model(name)`` loads one (with its training record).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from .model import MQARModel, load_model_file
from .registry import _KNOB, WEIGHTS_DIR

__all__ = [
    "PAPER_DIR",
    "paper_path",
    "task_model_name",
    "task_model_names",
    "load_task_model",
    "TASK_PREFIX",
    "correlations",
]

PAPER_DIR = Path(__file__).resolve().parent / "paper"
TASK_PREFIX = {"selective_copying": "copy", "compression": "compress"}
RESULTS = (
    "tasks_results",
    "copy_hard_results",
    "regularizer_results",
    "init_results",
    "distill_results",
    "distill_correlations",
)


def paper_path(name: str) -> Path:
    """Path of a shipped results CSV (one of ``RESULTS``)."""
    if name not in RESULTS:
        raise ValueError(f"`name` must be one of {RESULTS}, got {name!r}.")
    return PAPER_DIR / f"{name}.csv"


def task_model_name(task: str, family: str, state: int, num_items: int) -> str:
    """E.g. ``task_model_name("compression", "s6", 4, 6) == "compress-s6-ds4-n6"``."""
    if task not in TASK_PREFIX:
        raise ValueError(f"`task` must be one of {tuple(TASK_PREFIX)}, got {task!r}.")
    return f"{TASK_PREFIX[task]}-{family}-{_KNOB[family]}{state}-n{num_items}"


def task_model_names() -> list[str]:
    """Names of the shipped selective-copying and compression models, sorted."""
    order = {f: i for i, f in enumerate(_KNOB)}
    names = [
        p.stem
        for prefix in TASK_PREFIX.values()
        for p in WEIGHTS_DIR.glob(f"{prefix}-*.safetensors")
    ]
    return sorted(names, key=lambda n: (n.split("-")[0], order.get(n.split("-")[1], 9), n))


def load_task_model(name: str, *, with_record: bool = False):
    """Load a shipped task model (eval mode, CPU, float32), offline.

    Returns the ``MQARModel``, or ``(model, record)`` with ``with_record=True``; the
    record holds the training options (``task``, ``num_items``, ``seq_len``,
    ``vocab_size``, ``reg_lambda``, ``init``, ``steps_run``, ``train_accuracy``, ...).
    """
    names = task_model_names()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{name!r} is not a shipped task model; task_model_names(): {names}.{hint}"
        )
    model, meta = load_model_file(WEIGHTS_DIR / f"{name}.safetensors")
    assert isinstance(model, MQARModel)
    return (model, dict(meta.get("training", {}))) if with_record else model


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # undefined (constant) or meaningless (two points)
    return float(np.corrcoef(x, y)[0, 1])


def correlations(frame: pd.DataFrame, y: str, measures, by: str | None = None) -> pd.DataFrame:
    """Spearman and Pearson correlations of column ``y`` with each of ``measures``.

    Spearman is the Pearson correlation of the average ranks (ties share their
    mean rank), as ``scipy.stats.spearmanr``; NaN for fewer than 3 rows or a
    constant column.

    Parameters
    ----------
    frame : pandas.DataFrame
    y : str
        E.g. ``"accuracy"`` or ``"distill_loss"``.
    measures : sequence of str
        Columns to correlate with ``y``.
    by : str, optional
        A column to group by; the rows of all of ``frame`` come first as group ``"all"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``measure``, ``n``, ``spearman``, ``pearson``.
    """
    groups = [("all", frame)]
    if by is not None:
        groups += [(str(k), g) for k, g in frame.groupby(by, sort=False)]
    rows = []
    for group, g in groups:
        for m in measures:
            x, v = g[m].to_numpy(float), g[y].to_numpy(float)
            rx, rv = g[m].rank().to_numpy(float), g[y].rank().to_numpy(float)
            rows.append(
                {
                    "group": group,
                    "measure": m,
                    "n": len(g),
                    "spearman": _pearson(rx, rv),
                    "pearson": _pearson(x, v),
                }
            )
    return pd.DataFrame(rows)
