"""``sweep``: the ESS table of every text of a corpus, written as a Parquet dataset.

The driver reads the corpus, cuts it into shards of ``shard_size`` texts, skips the
shards a previous run of the same settings already wrote (``resume``), and hands
the others to an engine: ``"local"`` computes them in this process, ``"ray"`` on
Ray actors (``ray_engine``). Both run ``compute.compute_shard`` and write the same
files with ``storage.write_shard``, so a sweep started with one engine can be
finished with the other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..adapters import DEFAULT_TOL, load
from .compute import compute_shard
from .storage import (
    TABLES,
    prepare_output,
    read_failures,
    read_sweep,
    settings_difference,
    shard_metadata,
    write_shard,
    written_shards,
)
from .texts import Shard, corpus_items, shards

__all__ = ["sweep", "SweepResult", "DEFAULT_SHARD_SIZE", "ENGINES"]

DEFAULT_SHARD_SIZE = 32
ENGINES = ("local", "ray")
_RAY_OPTIONS = ("concurrency", "num_cpus", "num_gpus", "address")


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did.

    Attributes
    ----------
    path : pathlib.Path
        The dataset folder (``out``).
    texts : int
        Texts in the corpus.
    shards : int
        Shards in the dataset.
    written, skipped : int
        Shards computed by this call, and shards found already written (resume).
    failures : int
        Texts that failed in the shards this call wrote (``read_failures(path)``).
    seconds : float
    engine : str
    """

    path: Path
    texts: int
    shards: int
    written: int
    skipped: int
    failures: int
    seconds: float
    engine: str

    def read(self, **kwargs):
        """``read_sweep(self.path, **kwargs)``."""
        return read_sweep(self.path, **kwargs)

    def read_failures(self):
        """``read_failures(self.path)``."""
        return read_failures(self.path)


# ----------------------------------------------------------------------------- settings
def model_name(model) -> str:
    """How the settings name a model: a handle's name, a resolved folder, or the string."""
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        folder = Path(name).expanduser()
        return str(folder.resolve()) if folder.is_dir() else name
    if hasattr(model, "ess_table") and hasattr(model, "name"):
        return str(model.name)
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def encode_splits(splits):
    """``splits`` as JSON: None, an int stride, ``{"range": [start, stop, step]}`` or a list."""
    if splits is None:
        return None
    if isinstance(splits, bool):
        raise TypeError("`splits` must be None, an int stride, a range or slice, or ints.")
    if isinstance(splits, int):
        if splits < 1:
            raise ValueError(f"`splits` as a stride must be >= 1, got {splits}.")
        return splits
    if isinstance(splits, range):
        return {"range": [splits.start, splits.stop, splits.step]}
    if isinstance(splits, slice):
        return {"slice": [splits.start, splits.stop, splits.step]}
    try:
        values = sorted({int(i) for i in splits})
    except (TypeError, ValueError):
        raise TypeError(
            f"`splits` must be None, an int stride, a range or slice, or ints, got {splits!r}."
        ) from None
    if not values:
        raise ValueError("`splits` is empty: pass None for every split.")
    return values


def decode_splits(spec):
    """Inverse of ``encode_splits``."""
    if isinstance(spec, dict):
        if "range" in spec:
            return range(*spec["range"])
        return slice(*spec["slice"])
    return spec


def _layers_spec(layers):
    if layers is None:
        return None
    if isinstance(layers, bool):
        raise TypeError("`layers` must be None, an int or ints, got bool.")
    if isinstance(layers, int):
        return [layers]
    try:
        values = sorted({int(i) for i in layers})
    except (TypeError, ValueError):
        raise TypeError(f"`layers` must be None, an int or ints, got {layers!r}.") from None
    if not values:
        raise ValueError("`layers` is empty: pass None for all layers.")
    return values


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value}.")
    return value


def run_settings(model, *, layers, tol, relative, splits, shard_size, memory_budget, load_options):
    """The settings a sweep records and a resumed sweep must repeat exactly."""
    import ess_widgets

    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"`shard_size` must be an int >= 1, got {shard_size!r}.")
    return {
        "model": model_name(model),
        "layers": _layers_spec(layers),
        "tol": _check_number(tol, "tol"),
        "relative": bool(relative),
        "splits": encode_splits(splits),
        "shard_size": shard_size,
        "memory_budget": None if memory_budget is None else int(memory_budget),
        "load_options": {k: str(v) for k, v in sorted((load_options or {}).items())},
        "version": ess_widgets.__version__,
    }


def compute_settings(settings: dict) -> dict:
    """What ``compute_shard`` needs, from the recorded settings."""
    return {
        "layers": settings["layers"],
        "tol": settings["tol"],
        "relative": settings["relative"],
        "splits": decode_splits(settings["splits"]),
    }


def load_handle(model, settings: dict, load_options: dict | None):
    """A handle for ``model``: handles pass through, names, folders and models are loaded."""
    if hasattr(model, "ess_table") and hasattr(model, "encode"):
        return model
    options = dict(load_options or {})
    if settings.get("memory_budget") is not None:
        options["memory_budget"] = settings["memory_budget"]
    return load(model, **options)


# ----------------------------------------------------------------------------- sweep
def _check_written(path: Path, shard: Shard, part: Path, settings: dict) -> None:
    meta = shard_metadata(part)
    diff = settings_difference(meta.get("settings", {}), settings)
    if diff:
        raise ValueError(
            f"Shard {shard.index} in {str(path)!r} was written with other settings ("
            + "; ".join(diff)
            + "): the dataset is not one run. Write to a new `out`."
        )
    if meta.get("texts_sha256") != shard.digest():
        raise ValueError(
            f"Shard {shard.index} in {str(path)!r} was written from other texts (texts "
            f"{shard.first_id}..{shard.first_id + len(shard.items) - 1} differ): resuming "
            "needs the same corpus in the same order. Write to a new `out`."
        )


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of a shard that was in flight when a previous run stopped."""
    for table in TABLES:
        for tmp in (path / table).glob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)


def sweep(
    model,
    texts,
    *,
    layers=None,
    tol: float = DEFAULT_TOL,
    relative: bool = False,
    splits=None,
    out="ess.parquet",
    engine: str = "local",
    resume: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    memory_budget: int | None = None,
    load_options: dict | None = None,
    concurrency: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    address: str | None = None,
) -> SweepResult:
    """The ESS table of every text of a corpus, written as a Parquet dataset.

    Parameters
    ----------
    model : str, os.PathLike, ModelHandle, MQARHandle or transformers model
        Anything ``ess_widgets.load`` accepts (a built-in name such as
        ``"smollm2-135m"``, a ``save_pretrained`` folder, a hub id), or a handle.
        With ``engine="ray"`` a name or folder is loaded by every actor (a folder
        must be readable on every node); a handle or model object is sent once
        through Ray's object store (pickled) and each actor unpickles its copy.
    texts : iterable of (str or sequence of int), or str / os.PathLike
        Texts or token-id lists, or the path of a ``.txt`` file (texts separated by
        blank lines) or a ``.jsonl`` file (one JSON string, or an object with a
        ``"text"`` or ``"token_ids"`` key, per line). ``text_id`` is the position
        in this stream, 0-based.
    layers : int or iterable of int, optional
        Layers to measure (all by default).
    tol : float, default 1e-3
        Tolerance of the tolerance-ESS.
    relative : bool, default False
        Count singular values ``> tol * sigma_1`` of each split instead of ``> tol``.
    splits : None, int, range, slice or iterable of int, optional
        Splits to keep per text: None for all ``1 .. L-1``, an int ``k`` for every
        k-th split (the last split always included), or split indices (those
        beyond a text's ``L - 1`` are an error for that text, recorded as a
        failure). Only those splits are computed (``ess_table(splits=...)``).
    out : str or os.PathLike, default "ess.parquet"
        The dataset folder (see ``ess_widgets.corpus.storage``). A path holding
        anything but a sweep is refused.
    engine : {"local", "ray"}, default "local"
        ``"ray"``: Ray Data ``map_batches`` over shards with a pool of actors, each
        loading the model once; needs ``pip install 'ess-widgets[ray]'``.
    resume : bool, default True
        If ``out`` holds a sweep with the same settings, skip its written shards
        (after checking that they hold the same texts). A sweep with other settings
        is refused (ValueError) whatever ``resume`` says; with ``resume=False`` an
        existing sweep is refused too (FileExistsError), never overwritten.
    shard_size : int, default 32
        Texts per shard: per file, and the most work an interruption loses.
    progress : bool, default True
        A tqdm bar over texts.
    memory_budget : int, optional
        Bytes one text may use (the handle's default otherwise); see ``load``.
    load_options : dict, optional
        Passed to ``ess_widgets.load`` when the model is loaded here or in actors
        (e.g. ``{"device": "cuda"}``).
    concurrency, num_cpus, num_gpus, address : optional, ``engine="ray"`` only
        Actors in the pool (default: as many as the cluster's CPUs, or GPUs when
        ``num_gpus`` is set, allow), CPUs and GPUs per actor (default 1 CPU, 0
        GPU), and the address of an existing cluster (default: the one
        ``ray.init`` already connected to, else a local cluster started here and
        shut down at the end).

    Returns
    -------
    SweepResult
        ``path``, counts of texts, shards written and skipped, failures; ``read()``.

    Raises
    ------
    ValueError
        Empty corpus, bad settings, or a resume whose settings or texts differ.
    FileExistsError
        ``out`` exists with other data (or with a sweep and ``resume=False``).
    ImportError
        ``engine="ray"`` without Ray installed (the message has the pip command).

    Examples
    --------
    >>> import ess_widgets
    >>> result = ess_widgets.sweep("smollm2-135m", ["One text.", "Another one."],
    ...                            layers=[0, 5], out="ess.parquet")  # doctest: +SKIP
    >>> table = ess_widgets.read_sweep("ess.parquet")  # doctest: +SKIP
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}.")
    ray_options = {
        "concurrency": concurrency,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "address": address,
    }
    if engine == "local":
        given = [k for k, v in ray_options.items() if v is not None]
        if given:
            raise ValueError(f"{given} apply to engine='ray' only; this sweep is local.")
    else:
        from .ray_engine import require_ray

        require_ray()  # fail before reading the corpus
    settings = run_settings(
        model,
        layers=layers,
        tol=tol,
        relative=relative,
        splits=splits,
        shard_size=shard_size,
        memory_budget=memory_budget,
        load_options=load_options,
    )
    stream = shards(corpus_items(texts), shard_size)
    first = next(stream, None)
    if first is None:
        raise ValueError(
            "`texts` is empty: there is nothing to sweep (no dataset was written). "
            "Pass at least one text."
        )
    path = prepare_output(out, settings, resume=resume)
    _remove_stale_temporaries(path)
    done = written_shards(path)
    metadata = {"settings": settings, "version": settings["version"]}
    total = _known_length(texts)
    bar = tqdm(total=total, unit="text", desc="ESS sweep", disable=not progress)
    n_texts = n_shards = skipped = written = failures = 0
    pending: list[Shard] = []
    handle = None
    try:
        for shard in _chain(first, stream):
            n_texts += len(shard.items)
            n_shards += 1
            if shard.index in done:
                _check_written(path, shard, done[shard.index], settings)
                skipped += 1
                bar.update(len(shard.items))
                continue
            if engine == "ray":
                pending.append(shard)
                continue
            if handle is None:
                handle = load_handle(model, settings, load_options)
            tables = compute_shard(
                handle, shard, compute_settings(settings), on_text=lambda: bar.update(1)
            )
            write_shard(path, shard.index, tables, _part_metadata(metadata, shard, engine))
            written += 1
            failures += tables["failures"].num_rows
        if pending:
            from .ray_engine import run_ray

            stats = run_ray(
                model,
                pending,
                out=path,
                settings=settings,
                metadata={s.index: _part_metadata(metadata, s, engine) for s in pending},
                load_options=load_options,
                on_shard=lambda n: bar.update(n),
                **ray_options,
            )
            written += stats["shards"]
            failures += stats["failures"]
    finally:
        bar.close()
    extra = sorted(k for k in written_shards(path) if k >= n_shards)
    if extra:
        raise ValueError(
            f"{str(path)!r} holds shards {extra} beyond the {n_shards} shards of these texts: "
            "it was written from a longer corpus. Write to a new `out`."
        )
    return SweepResult(
        path=path,
        texts=n_texts,
        shards=n_shards,
        written=written,
        skipped=skipped,
        failures=failures,
        seconds=time.perf_counter() - start,
        engine=engine,
    )


def _part_metadata(metadata: dict, shard: Shard, engine: str) -> dict:
    return dict(
        metadata,
        engine=engine,
        first_text_id=shard.first_id,
        n_texts=len(shard.items),
        texts_sha256=shard.digest(),
    )


def _chain(first, rest):
    yield first
    yield from rest


def _known_length(texts) -> int | None:
    if isinstance(texts, (str, os.PathLike)):
        return None
    try:
        return len(texts)
    except TypeError:
        return None
