"""The sweep's Parquet dataset: layout, schema, metadata, atomic shard writes, reading.

Layout of a sweep folder ``out``::

    out/_sweep.json               settings, package version, format (written first)
    out/ess/part-00000.parquet    ESS rows of shard 0 (written last: the shard's commit)
    out/texts/part-00000.parquet  one row per text of shard 0
    out/failures/part-00000.parquet   texts of shard 0 that failed, with the error

Every part carries the settings, the package version, the shard number and a
SHA-256 of the shard's texts in its Parquet schema metadata (key
``ess_widgets.sweep``). Files are written under temporary names and renamed, the
``ess`` part last: a shard counts as written only once its ``ess`` part exists, so
an interruption loses at most the shard in flight.

Tables (Arrow types):

``ess``: ``text_id`` int64, then the columns of ``ess_table`` (``layer`` int32,
``mixer`` string, ``kind`` string, ``channel`` int32, ``split`` int32, ``token``
string, ``tolerance_ess`` int32, ``entropy_ess`` float64, ``bound`` int32, ``tss``
int64), with ``token_id`` int64 (the id of ``token``, the token read just before
the split) after ``token``.

``texts``: ``text_id`` int64, ``shard`` int32, ``text`` string (null for token-id
input), ``token_ids`` list<int64> (null when the text failed), ``n_tokens`` int32,
``status`` string (``"ok"`` or ``"failed"``).

``failures``: ``text_id`` int64, ``shard`` int32, ``error_type`` string, ``error``
string (the message).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pandas as pd

try:
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
except ImportError as err:  # pragma: no cover - pyarrow is in the corpus/ray/test extras
    raise ImportError(
        "Corpus sweeps write Parquet with pyarrow, which is not installed: "
        "pip install 'ess-widgets[corpus]' (or pip install pyarrow)."
    ) from err

from ..adapters.table import COLUMNS as TABLE_COLUMNS

__all__ = [
    "FORMAT",
    "MANIFEST",
    "METADATA_KEY",
    "TABLES",
    "ess_schema",
    "TEXTS_SCHEMA",
    "FAILURES_SCHEMA",
    "prepare_output",
    "part_path",
    "written_shards",
    "shard_metadata",
    "write_shard",
    "read_sweep",
    "read_texts",
    "read_failures",
    "sweep_settings",
    "settings_difference",
]

FORMAT = "ess-widgets sweep"
FORMAT_VERSION = 1
MANIFEST = "_sweep.json"
METADATA_KEY = b"ess_widgets.sweep"
TABLES = ("ess", "texts", "failures")

# Arrow types of the ess_table columns; a column the handle adds later (e.g. a
# mixer name) is stored as a string unless it is listed here.
_ESS_TYPES = {
    "text_id": pa.int64(),
    "layer": pa.int32(),
    "kind": pa.string(),
    "mixer": pa.string(),
    "channel": pa.int32(),
    "split": pa.int32(),
    "token": pa.string(),
    "token_id": pa.int64(),
    "tolerance_ess": pa.int32(),
    "entropy_ess": pa.float64(),
    "bound": pa.int32(),
    "tss": pa.int64(),
}
# Read back as pandas categoricals, as in ess_table.
_CATEGORICAL = ("kind", "mixer", "token")

TEXTS_SCHEMA = pa.schema(
    [
        ("text_id", pa.int64()),
        ("shard", pa.int32()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int64())),
        ("n_tokens", pa.int32()),
        ("status", pa.string()),
    ]
)
FAILURES_SCHEMA = pa.schema(
    [
        ("text_id", pa.int64()),
        ("shard", pa.int32()),
        ("error_type", pa.string()),
        ("error", pa.string()),
    ]
)


def ess_columns(table_columns=TABLE_COLUMNS) -> list[str]:
    """Column order of the ``ess`` table: ``text_id``, the ess_table columns, ``token_id``."""
    columns = ["text_id"]
    for name in table_columns:
        columns.append(name)
        if name == "token":
            columns.append("token_id")
    return columns


def ess_schema(table_columns=TABLE_COLUMNS) -> pa.Schema:
    """The Arrow schema of the ``ess`` table."""
    return pa.schema(
        [(name, _ESS_TYPES.get(name, pa.string())) for name in ess_columns(table_columns)]
    )


def _schema(name: str) -> pa.Schema:
    return {"ess": ess_schema(), "texts": TEXTS_SCHEMA, "failures": FAILURES_SCHEMA}[name]


# ----------------------------------------------------------------------------- settings
def settings_difference(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two settings dicts (empty when equal)."""
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} (on disk) vs {new.get(k)!r} (now)"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def _manifest(settings: dict) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings}


def prepare_output(out, settings: dict, *, resume: bool) -> Path:
    """Create the sweep folder, or check that an existing one may be continued.

    Parameters
    ----------
    out : str or os.PathLike
    settings : dict
        JSON-serializable settings of this run, package version included.
    resume : bool
        Continue a sweep of the same settings found at ``out``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileExistsError
        ``out`` is a file, a folder with other data, or a sweep while ``resume`` is
        False.
    ValueError
        ``out`` holds a sweep made with other settings (the message lists them).
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"`out` = {str(path)!r} is an existing file: choose a new path.")
    manifest_path = path / MANIFEST
    if path.is_dir() and any(path.iterdir()):
        if not manifest_path.is_file():
            raise FileExistsError(
                f"`out` = {str(path)!r} exists and holds other data (no {MANIFEST}): choose a "
                "new path; a sweep never writes into a folder it did not create."
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise FileExistsError(
                f"`out` = {str(path)!r}: its {MANIFEST} is unreadable ({err}); choose a new path."
            ) from None
        if manifest.get("format") != FORMAT:
            raise FileExistsError(
                f"`out` = {str(path)!r} holds other data (its {MANIFEST} is not an "
                f"{FORMAT!r} manifest): choose a new path."
            )
        diff = settings_difference(manifest.get("settings", {}), settings)
        if diff:
            raise ValueError(
                f"`out` = {str(path)!r} holds a sweep made with other settings, so resuming "
                "would mix two runs in one dataset. Differences: "
                + "; ".join(diff)
                + ". Use the same settings, or write to a new `out`."
            )
        if not resume:
            raise FileExistsError(
                f"`out` = {str(path)!r} already holds a sweep with these settings: pass "
                "resume=True to finish it, or choose a new path (nothing is overwritten)."
            )
        return path
    for table in TABLES:
        (path / table).mkdir(parents=True, exist_ok=True)
    _atomic_text(manifest_path, json.dumps(_manifest(settings), indent=2, sort_keys=True))
    return path


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- shards
def part_path(out, table: str, shard: int) -> Path:
    """Where one table of one shard lives: ``out/<table>/part-<shard:05d>.parquet``."""
    return Path(out) / table / f"part-{shard:05d}.parquet"


def shard_metadata(path) -> dict:
    """The ``ess_widgets.sweep`` metadata of one part file."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} has no {METADATA_KEY.decode()} metadata: not a sweep part.")
    return json.loads(meta[METADATA_KEY])


def written_shards(out) -> dict[int, Path]:
    """Shards whose ``ess`` part exists (the last file a shard writes), by number."""
    found = {}
    for p in (Path(out) / "ess").glob("part-*.parquet"):
        try:
            found[int(p.stem.split("-")[1])] = p
        except (IndexError, ValueError):
            continue
    return dict(sorted(found.items()))


def write_shard(out, shard: int, tables: dict[str, pa.Table], metadata: dict) -> None:
    """Write one shard's tables, the ``ess`` part last, each under a temporary name first.

    ``metadata`` (settings, version, texts digest, ...) goes into every part's schema
    metadata with the table's name and the shard number added.
    """
    out = Path(out)
    staged = []
    for name in ("texts", "failures", "ess"):
        table = tables[name]
        meta = dict(metadata, table=name, shard=int(shard), rows=table.num_rows)
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
        final = part_path(out, name, shard)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp)
        staged.append((tmp, final))
    for tmp, final in staged:  # renames only: the ess part, renamed last, commits the shard
        os.replace(tmp, final)


# ----------------------------------------------------------------------------- reading
def _sweep_dir(path) -> Path:
    path = Path(path).expanduser()
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a sweep folder (no {MANIFEST}); sweeps are written by "
            "ess_widgets.sweep(..., out=...)."
        )
    return path


def sweep_settings(path) -> dict:
    """The settings a sweep was made with (model, layers, tol, relative, splits, ...)."""
    return json.loads((_sweep_dir(path) / MANIFEST).read_text())["settings"]


def _dataset(path, table: str):
    folder = _sweep_dir(path) / table
    files = sorted(str(p) for p in folder.glob("part-*.parquet"))
    return pads.dataset(files, schema=_schema(table).remove_metadata(), format="parquet")


def _to_pandas(table: pa.Table, path, sort: list[str]) -> pd.DataFrame:
    frame = table.to_pandas()
    for name in _CATEGORICAL:
        if name in frame.columns:
            frame[name] = frame[name].astype("category")
    present = [c for c in sort if c in frame.columns]
    if present and len(frame):
        frame = frame.sort_values(present, kind="stable", ignore_index=True)
    frame.attrs.update(sweep_settings(path))
    return frame


def read_sweep(path, *, lazy: bool = False, columns=None, filter=None):
    """The ESS rows of a sweep.

    Parameters
    ----------
    path : str or os.PathLike
        The ``out`` folder of ``ess_widgets.sweep``.
    lazy : bool, default False
        Return a ``pyarrow.dataset.Dataset`` instead (nothing read yet): for sweeps
        larger than memory, e.g. ``ds.to_table(filter=pc.field("layer") == 3)``.
    columns : list of str, optional
        Read only these columns.
    filter : pyarrow.compute.Expression, optional
        Rows to keep, e.g. ``pyarrow.compute.field("layer") < 4``.

    Returns
    -------
    pandas.DataFrame or pyarrow.dataset.Dataset
        Columns ``text_id``, the ``ess_table`` columns and ``token_id`` (see this
        module's docstring); ``kind`` and ``token`` as categoricals; sorted by
        ``text_id``, ``layer``, ``channel``, ``split``. ``attrs`` holds the sweep's
        settings.

    Examples
    --------
    >>> table = read_sweep("ess.parquet")  # doctest: +SKIP
    >>> table.groupby(["layer", "channel"])["entropy_ess"].mean()  # doctest: +SKIP
    """
    ds = _dataset(path, "ess")
    if lazy:
        return ds
    table = ds.to_table(columns=columns, filter=filter)
    return _to_pandas(table, path, ["text_id", "layer", "channel", "split"])


def read_texts(path) -> pd.DataFrame:
    """One row per text of a sweep: ``text_id``, ``shard``, ``text``, ``token_ids``,
    ``n_tokens``, ``status`` ("ok" or "failed"), sorted by ``text_id``."""
    return _to_pandas(_dataset(path, "texts").to_table(), path, ["text_id"])


def read_failures(path) -> pd.DataFrame:
    """The texts that failed: ``text_id``, ``shard``, ``error_type``, ``error``."""
    return _to_pandas(_dataset(path, "failures").to_table(), path, ["text_id"])
