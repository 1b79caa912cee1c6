"""One shard of a sweep: the ESS table of each text, as Arrow tables.

This is the whole computation both engines run; they differ only in where it runs
(``local``: this process; ``ray_engine``: Ray actors). A text that fails (empty,
longer than the model's context or the memory budget, ...) becomes a row of the
``failures`` table and the shard goes on.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pyarrow as pa

from .storage import FAILURES_SCHEMA, TEXTS_SCHEMA, ess_schema
from .texts import Shard

__all__ = ["normalize_splits", "select_splits", "text_table", "compute_shard"]


def _local_normalize_splits(splits, L: int) -> list[int]:
    """Splits as sorted ints in ``1 .. L-1``: ints, a range or slice, or an int stride."""
    if isinstance(splits, bool):
        raise TypeError("`splits` must be None, an int stride, a range/slice or ints, got bool.")
    if isinstance(splits, (int, np.integer)):
        k = int(splits)
        if k < 1:
            raise ValueError(f"`splits` as a stride must be >= 1, got {k}.")
        out = list(range(k, L, k))
        if L - 1 not in out:
            out.append(L - 1)
        return out
    if isinstance(splits, slice):
        splits = range(*splits.indices(L))
    out = sorted({int(i) for i in splits})
    bad = [i for i in out if not 1 <= i <= L - 1]
    if bad or not out:
        raise ValueError(
            f"`splits` must be split indices in 1..{L - 1} (L = {L}), got {bad or out}."
        )
    return out


try:  # the core's rule once it lands (branch core-fast); the same contract until then
    from ..core import normalize_splits
except ImportError:  # pragma: no cover - depends on the merge order
    normalize_splits = _local_normalize_splits


def select_splits(table: pd.DataFrame, splits, L: int) -> pd.DataFrame:
    """The rows of an ESS table at the requested splits (all rows for ``splits=None``).

    For handles whose ``ess_table`` has no ``splits`` argument: every split is
    computed and these rows are kept (the numbers the full table holds there).
    """
    if splits is None:
        return table
    keep = normalize_splits(splits, L)
    return table[table["split"].isin(keep)].reset_index(drop=True)


def _categorical_strings(values) -> pa.Array:
    """A pandas column (categorical or not) as an Arrow string array."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = pa.array(values.cat.categories.astype(str).tolist(), pa.string())
        return categories.take(pa.array(values.cat.codes.to_numpy(), pa.int32()))
    return pa.array(values.astype(str).tolist(), pa.string())


def text_table(table: pd.DataFrame, text_id: int, token_ids) -> pa.Table:
    """One text's ``ess_table`` as rows of the ``ess`` Arrow table.

    Adds ``text_id`` and ``token_id`` (``token_ids[split - 1]``, the token read
    just before the split).
    """
    schema = ess_schema(tuple(c for c in table.columns))
    ids = np.asarray(token_ids, dtype=np.int64)
    split = table["split"].to_numpy()
    arrays = []
    for field in schema:
        name = field.name
        if name == "text_id":
            arr = pa.array(np.full(len(table), text_id, dtype=np.int64))
        elif name == "token_id":
            arr = pa.array(ids[split - 1])
        elif pa.types.is_string(field.type):
            arr = _categorical_strings(table[name])
        else:
            arr = pa.array(table[name].to_numpy(), type=field.type)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def _ess_table(handle, item, settings: dict) -> pd.DataFrame:
    """``handle.ess_table`` of one text at the sweep's splits."""
    options = {
        "layers": settings["layers"],
        "tol": settings["tol"],
        "relative": settings["relative"],
        "progress": False,
    }
    if "splits" in inspect.signature(handle.ess_table).parameters:
        return handle.ess_table(item, splits=settings["splits"], **options)
    table = handle.ess_table(item, **options)
    return select_splits(table, settings["splits"], len(table.attrs["token_ids"]))


def compute_shard(handle, shard: Shard, settings: dict, *, on_text=None) -> dict[str, pa.Table]:
    """The ``ess``, ``texts`` and ``failures`` tables of one shard.

    Parameters
    ----------
    handle : ModelHandle or MQARHandle
    shard : Shard
    settings : dict
        ``layers``, ``tol``, ``relative``, ``splits`` (as in ``sweep``).
    on_text : callable, optional
        Called after each text (the progress bar).

    Returns
    -------
    dict of pyarrow.Table
        Keyed ``"ess"``, ``"texts"``, ``"failures"``.
    """
    ess_parts, texts, failures = [], [], []
    for text_id, item in zip(shard.text_ids, shard.items):
        is_text = isinstance(item, str)
        row = {"text_id": text_id, "shard": shard.index, "text": item if is_text else None}
        try:
            table = _ess_table(handle, item if is_text else list(item), settings)
            token_ids = table.attrs["token_ids"]
            ess_parts.append(text_table(table, text_id, token_ids))
            row.update(token_ids=list(token_ids), n_tokens=len(token_ids), status="ok")
        except Exception as err:  # recorded, and the sweep goes on (see module docstring)
            failures.append(
                {
                    "text_id": text_id,
                    "shard": shard.index,
                    "error_type": type(err).__name__,
                    "error": str(err).strip() or type(err).__name__,
                }
            )
            row.update(token_ids=None, n_tokens=None, status="failed")
        texts.append(row)
        if on_text is not None:
            on_text()
    if ess_parts:
        ess = pa.concat_tables(ess_parts)
    else:
        ess = ess_schema().empty_table()
    return {
        "ess": ess,
        "texts": pa.Table.from_pylist(texts, schema=TEXTS_SCHEMA),
        "failures": pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA),
    }
