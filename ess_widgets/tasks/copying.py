"""Selective copying and compression: seeded batch generators and their text format.

Both tasks share one vocabulary of ``vocab_size`` tokens:

- token ``0`` (``FILLER``, text ``_``): noise in selective copying, the blank read
  while reproducing in compression;
- token ``1`` (``DELIMITER``, text ``|``): "copy now" / "the sequence ended";
- tokens ``2 .. vocab_size - 1``: data tokens, text ``d1 .. d(vocab_size - 2)``
  (``d<n>`` is token id ``n + 1``).

Targets are ``IGNORE_INDEX`` (-100) everywhere except where the task defines the
answer, as for ``mqar``; ``batch.query_mask`` marks those positions. The number of
items a model must hold in its state is ``num_tokens`` (the analogue of MQAR's
``num_pairs``: ESS/kv of these tasks divides by ``num_tokens``).

Selective copying (Mamba, Gu & Dao 2023; MAD, Poli et al. 2024), autoregressive
---------------------------------------------------------------------------------
``seq_len = context_len + num_tokens``. The first ``context_len`` positions hold
``num_tokens`` data tokens (distinct within a sequence) at random positions, in
random order, among noise tokens. Then the delimiter, then the data tokens again
in order, minus the last one (teacher forcing, as in language modelling). The
target at the delimiter is the first data token, and at the ``j``-th copied token
the ``(j + 1)``-th one: the model outputs the data tokens in order, ignoring the
noise. Distinct tokens make every answer a function of what was read.
*Hard*: more tokens to copy (``num_tokens``, against the state size) and more noise
between them (a longer ``context_len``).

Example, ``num_tokens=3``, ``seq_len=9`` (context 6), data ``d4 d2 d7``::

    inputs   _  d4 _  _  d2 d7 |  d4 d2
    targets  .  .  .  .  .  .  d4 d2 d7      (. = -100)

Compression (after MAD's compression task)
------------------------------------------
``seq_len = 2 * num_tokens``. The first ``num_tokens - 1`` positions hold random
data tokens (drawn with replacement), position ``num_tokens - 1`` the delimiter
(the "compression token"), and the rest filler. From the delimiter on, the model
reproduces the whole sequence ``x_1 .. x_(n-1)`` and then the delimiter, one token
per position, while reading only blanks: after the delimiter no input carries
information, so the state at the delimiter must be a summary of the whole
sequence (MAD decodes that summary with an MLP; here the model's own layers
decode it, one position at a time).
*Hard*: a longer sequence to compress (``num_tokens``, against the state size) and
a larger vocabulary (more bits per token).

Example, ``num_tokens=4`` (``seq_len=8``), sequence ``d3 d3 d9``::

    inputs   d3 d3 d9 |  _  _  _  _
    targets  .  .  .  d3 d3 d9 |  .      (. = -100)

(The last position has no target: its output would predict past the end.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .mqar import IGNORE_INDEX, _int

__all__ = [
    "selective_copying",
    "compression",
    "TaskBatch",
    "DELIMITER",
    "FILLER",
    "copy_tokens",
    "format_copy",
    "parse_copy",
]

FILLER = 0
DELIMITER = 1
FIRST_DATA = 2

_TOKEN = re.compile(r"^(?:d(\d{1,12})|_|\||(\d{1,12}))$")
_SYNTAX = (
    "copying tokens are d<n> (data token n), _ (noise / blank), | (delimiter) or a raw "
    "token id, separated by spaces"
)


@dataclass(frozen=True)
class TaskBatch:
    """One batch of selective copying or compression.

    Attributes
    ----------
    inputs : torch.LongTensor, shape (B, L)
    targets : torch.LongTensor, shape (B, L)
        The token to output where the task defines one, ``IGNORE_INDEX`` elsewhere.
    task : str
        ``"selective_copying"`` or ``"compression"``.
    num_tokens, seq_len, vocab_size, seed : int
        The arguments that made it.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    task: str
    num_tokens: int
    seq_len: int
    vocab_size: int
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def query_mask(self) -> torch.Tensor:
        """Boolean ``(B, L)``: True where a target is set."""
        return self.targets != IGNORE_INDEX

    @property
    def num_pairs(self) -> int:
        """Items to hold in the state (``num_tokens``), named as in ``MQARBatch``."""
        return self.num_tokens

    def __len__(self) -> int:
        return self.inputs.shape[0]


def selective_copying(
    num_examples: int, *, num_tokens: int, seq_len: int, vocab_size: int, seed: int
) -> TaskBatch:
    """Generate ``num_examples`` selective-copying sequences (see the module docstring).

    Parameters
    ----------
    num_examples : int
        Batch size ``B >= 1``.
    num_tokens : int
        Data tokens to copy per sequence, ``>= 1``.
    seq_len : int
        ``L = context_len + num_tokens``; needs ``context_len >= num_tokens``, i.e.
        ``seq_len >= 2 * num_tokens``.
    vocab_size : int
        Token count including the noise and the delimiter; needs
        ``vocab_size - 2 >= num_tokens`` (data tokens of a sequence are distinct).
    seed : int
        Seeds a ``torch.Generator``: the same arguments give the same batch.

    Returns
    -------
    TaskBatch
        ``num_tokens`` targets per sequence, at positions ``context_len .. L - 1``.

    Examples
    --------
    >>> b = selective_copying(2, num_tokens=3, seq_len=10, vocab_size=16, seed=0)
    >>> b.inputs.shape, int(b.query_mask.sum())
    (torch.Size([2, 10]), 6)
    """
    B = _int(num_examples, "num_examples", 1)
    n = _int(num_tokens, "num_tokens", 1)
    L = _int(seq_len, "seq_len", 2)
    V = _int(vocab_size, "vocab_size", 3)
    seed = _int(seed, "seed", 0)
    if L < 2 * n:
        raise ValueError(
            f"`seq_len` = {L} is too short for num_tokens = {n}: the context needs at least "
            f"{n} positions and the copy {n} more, so seq_len must be at least {2 * n}."
        )
    if V - FIRST_DATA < n:
        raise ValueError(
            f"`vocab_size` = {V} gives {V - FIRST_DATA} data tokens, fewer than num_tokens "
            f"= {n} (the tokens of a sequence are distinct). Use vocab_size >= {n + 2}."
        )
    context = L - n
    g = torch.Generator().manual_seed(seed)
    data = torch.rand(B, V - FIRST_DATA, generator=g).argsort(-1)[:, :n] + FIRST_DATA
    # positions of the data tokens in the context, sorted: the copy keeps their order.
    where = torch.rand(B, context, generator=g).argsort(-1)[:, :n].sort(-1).values
    inputs = torch.full((B, L), FILLER, dtype=torch.long)
    inputs.scatter_(1, where, data)
    inputs[:, context] = DELIMITER
    inputs[:, context + 1 :] = data[:, :-1]
    targets = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    targets[:, context:] = data
    return TaskBatch(inputs, targets, "selective_copying", n, L, V, seed)


def compression(num_examples: int, *, num_tokens: int, vocab_size: int, seed: int) -> TaskBatch:
    """Generate ``num_examples`` compression sequences (see the module docstring).

    Parameters
    ----------
    num_examples : int
        Batch size ``B >= 1``.
    num_tokens : int
        Tokens to compress, the delimiter included (``num_tokens - 1`` data tokens
        and the delimiter), ``>= 2``. ``seq_len = 2 * num_tokens``.
    vocab_size : int
        Token count including the filler and the delimiter, ``>= 3``.
    seed : int
        Seeds a ``torch.Generator``.

    Returns
    -------
    TaskBatch
        ``num_tokens`` targets per sequence, at positions ``num_tokens - 1 .. L - 2``.

    Examples
    --------
    >>> b = compression(2, num_tokens=4, vocab_size=16, seed=0)
    >>> b.inputs.shape, int(b.query_mask.sum())
    (torch.Size([2, 8]), 8)
    """
    B = _int(num_examples, "num_examples", 1)
    n = _int(num_tokens, "num_tokens", 2)
    V = _int(vocab_size, "vocab_size", 3)
    seed = _int(seed, "seed", 0)
    L = 2 * n
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(FIRST_DATA, V, (B, n - 1), generator=g)
    inputs = torch.full((B, L), FILLER, dtype=torch.long)
    inputs[:, : n - 1] = data
    inputs[:, n - 1] = DELIMITER
    targets = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    targets[:, n - 1 : 2 * n - 2] = data
    targets[:, 2 * n - 2] = DELIMITER
    return TaskBatch(inputs, targets, "compression", n, L, V, seed)


def copy_tokens(ids, vocab_size: int) -> tuple[str, ...]:
    """Readable labels of copying/compression token ids: ``_``, ``|``, ``d1`` ...

    Examples
    --------
    >>> copy_tokens([0, 5, 1, 2], 16)
    ('_', 'd4', '|', 'd1')
    """
    V = _int(vocab_size, "vocab_size", 3)
    out = []
    for i in (int(t) for t in ids):
        if not 0 <= i < V:
            raise ValueError(
                f"Token id {i} is outside the vocabulary of {V} tokens (0 .. {V - 1})."
            )
        out.append("_" if i == FILLER else "|" if i == DELIMITER else f"d{i - 1}")
    return tuple(out)


def format_copy(ids, vocab_size: int) -> str:
    """Token ids as text: ``parse_copy(format_copy(ids, V), V)`` gives ``ids`` back.

    Examples
    --------
    >>> format_copy([0, 5, 0, 3, 1, 5], 16)
    '_ d4 _ d2 | d4'
    """
    return " ".join(copy_tokens(ids, vocab_size))


def parse_copy(text: str, vocab_size: int) -> torch.Tensor:
    """Token ids (int64 ``(L,)``) of a text in the copying format (``_``, ``|``, ``d<n>``, ids).

    Raises
    ------
    ValueError
        An empty text, an unknown token, or a token outside the vocabulary.

    Examples
    --------
    >>> parse_copy("_ d4 _ d2 | d4", 16).tolist()
    [0, 5, 0, 3, 1, 5]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    V = _int(vocab_size, "vocab_size", 3)
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError(f"The text is empty. {_SYNTAX}, e.g. '_ d4 _ d2 | d4'.")
    ids = []
    for n, part in enumerate(parts):
        m = _TOKEN.match(part)
        if m is None:
            raise ValueError(f"Unknown token {part!r} at position {n}. {_SYNTAX}.")
        data, raw = m.groups()
        if data is not None:
            if not 1 <= int(data) <= V - FIRST_DATA:
                raise ValueError(
                    f"{part!r} at position {n} is not a data token of this vocabulary: data "
                    f"tokens are d1 .. d{V - FIRST_DATA}."
                )
            ids.append(int(data) + 1)
        elif raw is not None:
            if int(raw) >= V:
                raise ValueError(
                    f"Token id {raw} at position {n} is outside the vocabulary of {V} tokens "
                    f"(0 .. {V - 1})."
                )
            ids.append(int(raw))
        else:
            ids.append(FILLER if part == "_" else DELIMITER)
    return torch.tensor(ids, dtype=torch.int64)
