"""A corpus as a stream of texts, cut into shards.

``texts`` may be any iterable of strings or token-id sequences, or the path of a
file:

- ``.txt``: texts separated by one or more blank lines (a text may span several
  lines; its line breaks are kept, since newlines are delimiters worth measuring).
  For one text per line, use a ``.jsonl`` file or a list.
- ``.jsonl``: one JSON value per line: a string, or an object with a ``"text"``
  string or a ``"token_ids"`` list of ints (other keys are ignored). Blank lines
  are skipped.

Text ids are positions in the corpus, 0-based, blank entries included (they are
recorded as failures, not skipped), so that a text keeps its id across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

__all__ = ["Shard", "corpus_items", "shards", "read_text_file", "item_json"]

TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Shard:
    """A run of consecutive texts, written as one file per table.

    Attributes
    ----------
    index : int
        Shard number, 0-based: texts ``index * shard_size`` onward.
    first_id : int
        ``text_id`` of the first text.
    items : tuple of (str or tuple of int)
    """

    index: int
    first_id: int
    items: tuple

    @property
    def text_ids(self) -> range:
        return range(self.first_id, self.first_id + len(self.items))

    def digest(self) -> str:
        """SHA-256 of the shard's texts: a resumed shard must hold the same texts."""
        h = hashlib.sha256()
        for item in self.items:
            h.update(item_json(item).encode())
            h.update(b"\n")
        return h.hexdigest()


def item_json(item) -> str:
    """One text or token-id tuple as JSON (how shards travel to Ray actors)."""
    return json.dumps(item if isinstance(item, str) else list(item), ensure_ascii=False)


def _as_item(value, where: str):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{where} is bytes: decode it to a str first.")
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or not (arr.dtype.kind in "iu" or arr.size == 0):
        raise TypeError(
            f"{where} must be a str or a 1-d sequence of int token ids, got {type(value).__name__}."
        )
    return tuple(int(i) for i in arr)


def read_text_file(path) -> Iterator:
    """The texts of a ``.txt`` (blank-line separated) or ``.jsonl`` file, lazily.

    Raises
    ------
    ValueError
        Another suffix, or a ``.jsonl`` line that is not a string or an object with
        ``"text"`` or ``"token_ids"`` (the message gives the line number).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(
            f"`texts` = {str(path)!r}: a corpus file must end in .txt (texts separated by "
            'blank lines) or .jsonl (one JSON string or {"text": ...} per line).'
        )
    if not path.is_file():
        raise FileNotFoundError(f"`texts` = {str(path)!r}: no such file.")
    return _read_jsonl(path) if suffix == ".jsonl" else _read_txt(path)


def _read_txt(path: Path) -> Iterator[str]:
    lines: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                lines.append(line)
            elif lines:
                yield "\n".join(lines)
                lines = []
    if lines:
        yield "\n".join(lines)


def _read_jsonl(path: Path) -> Iterator:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name}, line {number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where} is not valid JSON ({err.msg}).") from None
            if isinstance(value, dict):
                if "text" in value:
                    value = value["text"]
                elif "token_ids" in value:
                    value = value["token_ids"]
                else:
                    raise ValueError(
                        f'{where}: an object needs a "text" or "token_ids" key, got keys '
                        f"{sorted(value)}."
                    )
            if not isinstance(value, (str, list)):
                raise ValueError(
                    f"{where}: expected a string, a list of token ids or an object with "
                    f'"text", got {type(value).__name__}.'
                )
            yield value


def corpus_items(texts) -> Iterator:
    """Validated texts (str) and token-id tuples, in corpus order.

    Parameters
    ----------
    texts : iterable of (str or sequence of int), or str / os.PathLike
        A path must name an existing ``.txt`` or ``.jsonl`` file (see the module
        docstring); a plain string that is not such a path is refused, since
        iterating it would give one text per character.
    """
    if isinstance(texts, os.PathLike) or (
        isinstance(texts, str) and texts.lower().endswith(TEXT_SUFFIXES)
    ):
        source: Iterable = read_text_file(texts)
    elif isinstance(texts, str):
        raise TypeError(
            "`texts` is a single string: pass a list of texts (e.g. [text]), or the path "
            "of an existing .txt or .jsonl file."
        )
    elif isinstance(texts, Iterable):
        source = texts
    else:
        raise TypeError(
            "`texts` must be an iterable of strings or token-id lists, or the path of a "
            f".txt or .jsonl file, got {type(texts).__name__}."
        )
    for position, value in enumerate(source):
        yield _as_item(value, f"text {position} of `texts`")


def shards(items: Iterable, shard_size: int) -> Iterator[Shard]:
    """Cut a stream of items into shards of ``shard_size`` texts (the last may be shorter)."""
    it = iter(items)
    index = 0
    while True:
        chunk = tuple(islice(it, shard_size))
        if not chunk:
            return
        yield Shard(index=index, first_id=index * shard_size, items=chunk)
        index += 1
