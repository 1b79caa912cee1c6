"""The MQAR text format: token ids as readable text and back.

Tokens separated by spaces (or commas), each one of

======== ==============================================================
``k5``   key number 5 (token id 5; keys are ``k1 .. kK``)
``v12``  value number 12 (token id ``K + 12``; values are ``v1 .. v(V-1-K)``)
``q:k5`` key 5 read again as a query (the same token id as ``k5``)
``_``    the filler token (id 0)
``17``   a raw token id
======== ==============================================================

with ``K = (vocab_size - 1) // 2`` (``mqar_vocab``). A sequence reads like
``"k3 v17 k5 v20 _ _ q:k5 _ q:k3"``. Token labels mark a key that already appeared
earlier in the sequence as a query (``q:k5``).
"""

from __future__ import annotations

import re

import torch

from .mqar import FILLER, mqar_vocab

__all__ = ["format_mqar", "parse_mqar", "mqar_tokens"]

# Digits of a key, value or id: more than this cannot be in any vocabulary here.
_MAX_DIGITS = 12

_TOKEN = re.compile(r"^(?:(q:)?k(\d+)|v(\d+)|_|(\d+))$")
_SYNTAX = (
    "MQAR tokens are k<n> (key), v<n> (value), q:k<n> (a key read as a query), _ "
    "(filler) or a raw token id, separated by spaces"
)


def mqar_tokens(ids, vocab_size: int) -> tuple[str, ...]:
    """Readable labels of MQAR token ids: ``k3``, ``v17``, ``_``, ``q:k3`` (a repeated key).

    Parameters
    ----------
    ids : sequence of int
    vocab_size : int
        The model's vocabulary size (keys and values from ``mqar_vocab``).

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> mqar_tokens([3, 40, 0, 3], 64)
    ('k3', 'v9', '_', 'q:k3')
    """
    keys, values = mqar_vocab(vocab_size)
    seen, out = set(), []
    for i in (int(t) for t in ids):
        if i == FILLER:
            out.append("_")
        elif i in keys:
            out.append(f"q:k{i}" if i in seen else f"k{i}")
            seen.add(i)
        elif i in values:
            out.append(f"v{i - values.start + 1}")
        else:
            raise ValueError(
                f"Token id {i} is outside the vocabulary of {vocab_size} tokens (0 .. "
                f"{vocab_size - 1})."
            )
    return tuple(out)


def format_mqar(ids, vocab_size: int) -> str:
    """MQAR token ids as text in the token format (see the module docstring).

    ``parse_mqar(format_mqar(ids, V), V)`` gives ``ids`` back.

    Examples
    --------
    >>> format_mqar([3, 40, 5, 33, 0, 5, 0, 3], 64)
    'k3 v9 k5 v2 _ q:k5 _ q:k3'
    """
    return " ".join(mqar_tokens(ids, vocab_size))


def parse_mqar(text: str, vocab_size: int) -> torch.Tensor:
    """Token ids (int64 ``(L,)``) of a text in the MQAR token format.

    Raises
    ------
    ValueError
        An empty text, a token that is not in the format, or a key, value or id
        outside the vocabulary (the message names the token and the valid range).

    Examples
    --------
    >>> parse_mqar("k3 v9 k5 v2 _ q:k5 _ k3", 64).tolist()
    [3, 40, 5, 33, 0, 5, 0, 3]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    keys, values = mqar_vocab(vocab_size)
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError(f"The MQAR text is empty. {_SYNTAX}, e.g. 'k3 v17 k5 v20 _ q:k3'.")
    ids = []
    for n, part in enumerate(parts):
        m = _TOKEN.match(part)
        if m is None:
            raise ValueError(f"Unknown MQAR token {part!r} at position {n}. {_SYNTAX}.")
        _, key, value, raw = m.groups()
        digits = key or value or raw or ""
        if len(digits) > _MAX_DIGITS:
            raise ValueError(
                f"MQAR token at position {n} has a number of {len(digits)} digits: `text` "
                f"holds keys k1 .. k{len(keys)}, values v1 .. v{len(values)} and ids below "
                f"{vocab_size}."
            )
        if key is not None:
            if not 1 <= int(key) <= len(keys):
                raise ValueError(
                    f"{part!r} at position {n} is not a key of this model: keys are "
                    f"k1 .. k{len(keys)}."
                )
            ids.append(keys.start + int(key) - 1)
        elif value is not None:
            if not 1 <= int(value) <= len(values):
                raise ValueError(
                    f"{part!r} at position {n} is not a value of this model: values are "
                    f"v1 .. v{len(values)}."
                )
            ids.append(values.start + int(value) - 1)
        elif raw is not None:
            if int(raw) >= vocab_size:
                raise ValueError(
                    f"Token id {raw} at position {n} is outside the vocabulary of "
                    f"{vocab_size} tokens (0 .. {vocab_size - 1})."
                )
            ids.append(int(raw))
        else:
            ids.append(FILLER)
    return torch.tensor(ids, dtype=torch.int64)
