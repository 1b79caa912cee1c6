"""Multi-query associative recall (MQAR): a seeded batch generator.

Convention (Zoology-style, one prediction per query token):

- Vocabulary of ``vocab_size`` tokens: token ``0`` is the filler (``FILLER``);
  keys are tokens ``1 .. K`` and values tokens ``K+1 .. vocab_size-1``, with
  ``K = (vocab_size - 1) // 2`` (two disjoint halves of the non-filler tokens).
- A sequence starts with ``num_pairs`` key-value pairs ``k_1 v_1 k_2 v_2 ...``
  (positions ``0 .. 2*num_pairs - 1``). The keys of a sequence are distinct; values
  are drawn uniformly with replacement.
- The rest of the sequence is filler, except ``num_queries`` query positions
  (distinct, uniform over ``2*num_pairs .. seq_len-1``), each holding one of the
  sequence's keys: by default every key is queried exactly once, in random order.
- ``targets`` is ``IGNORE_INDEX`` (-100, what ``torch.nn.functional.cross_entropy``
  skips) everywhere except at query positions, where it is the value paired with the
  queried key: the model must output the value *while reading the key* (it has seen
  the key, and must recall its value from the state).

Example, ``num_pairs=2``, ``seq_len=8``, keys ``{3, 5}``::

    inputs   3  9  5 12  0  5  0  3
    targets  .  .  .  .  . 12  .  9      (. = -100)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

__all__ = ["mqar", "MQARBatch", "mqar_vocab", "IGNORE_INDEX", "FILLER"]

IGNORE_INDEX = -100
FILLER = 0


@dataclass(frozen=True)
class MQARBatch:
    """One MQAR batch.

    Attributes
    ----------
    inputs : torch.LongTensor, shape (B, L)
        Token ids.
    targets : torch.LongTensor, shape (B, L)
        The value to output at each query position, ``IGNORE_INDEX`` elsewhere.
    num_pairs, seq_len, vocab_size, seed : int
        The arguments that made it.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    num_pairs: int
    seq_len: int
    vocab_size: int
    seed: int

    @property
    def query_mask(self) -> torch.Tensor:
        """Boolean ``(B, L)``: True at query positions (where a target is set)."""
        return self.targets != IGNORE_INDEX

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got bool.")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}.") from None
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {name} = {value}.")
    return value


def mqar_vocab(vocab_size: int) -> tuple[range, range]:
    """The key and value token ranges of an MQAR vocabulary.

    Examples
    --------
    >>> mqar_vocab(9)
    (range(1, 5), range(5, 9))
    """
    vocab_size = _int(vocab_size, "vocab_size", 5)
    half = (vocab_size - 1) // 2
    return range(1, 1 + half), range(1 + half, vocab_size)


def mqar(
    num_examples: int,
    *,
    num_pairs: int,
    seq_len: int,
    vocab_size: int,
    seed: int,
    num_queries: int | None = None,
) -> MQARBatch:
    """Generate ``num_examples`` MQAR sequences (see the module docstring).

    Parameters
    ----------
    num_examples : int
        Batch size ``B >= 1``.
    num_pairs : int
        Key-value pairs per sequence (the paper's "kv"), ``>= 1``.
    seq_len : int
        Sequence length ``L``; needs ``L >= 2 * num_pairs + num_queries``.
    vocab_size : int
        Token count including the filler ``0``; needs at least ``num_pairs`` keys,
        i.e. ``(vocab_size - 1) // 2 >= num_pairs``.
    seed : int
        Seeds a ``torch.Generator``: the same arguments give the same batch.
    num_queries : int, optional
        Queries per sequence, ``1 .. num_pairs`` (distinct keys); ``num_pairs`` by
        default (every key queried once).

    Returns
    -------
    MQARBatch

    Examples
    --------
    >>> batch = mqar(2, num_pairs=2, seq_len=8, vocab_size=16, seed=0)
    >>> batch.inputs.shape, int(batch.query_mask.sum())
    (torch.Size([2, 8]), 4)
    """
    B = _int(num_examples, "num_examples", 1)
    kv = _int(num_pairs, "num_pairs", 1)
    L = _int(seq_len, "seq_len", 3)
    V = _int(vocab_size, "vocab_size", 5)
    seed = _int(seed, "seed", 0)
    nq = kv if num_queries is None else _int(num_queries, "num_queries", 1)
    if nq > kv:
        raise ValueError(
            f"`num_queries` must be at most num_pairs = {kv} (each query asks a distinct "
            f"key), got num_queries = {nq}."
        )
    if L < 2 * kv + nq:
        raise ValueError(
            f"`seq_len` = {L} is too short: {kv} key-value pairs take {2 * kv} positions and "
            f"{nq} queries {nq} more, so seq_len must be at least {2 * kv + nq}."
        )
    keys, values = mqar_vocab(V)
    if len(keys) < kv:
        raise ValueError(
            f"`vocab_size` = {V} gives only {len(keys)} key tokens (half of the "
            f"{V - 1} non-filler tokens), fewer than num_pairs = {kv}: keys of a sequence "
            f"must be distinct. Use vocab_size >= {2 * kv + 1}."
        )
    g = torch.Generator().manual_seed(seed)
    # distinct keys per sequence: the first kv of a random permutation.
    k = torch.rand(B, len(keys), generator=g).argsort(-1)[:, :kv] + keys.start
    v = torch.randint(values.start, values.stop, (B, kv), generator=g)
    inputs = torch.full((B, L), FILLER, dtype=torch.long)
    targets = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    inputs[:, 0 : 2 * kv : 2] = k
    inputs[:, 1 : 2 * kv : 2] = v
    # which pairs are queried (in random order) and where the queries sit.
    which = torch.rand(B, kv, generator=g).argsort(-1)[:, :nq]
    slots = torch.rand(B, L - 2 * kv, generator=g).argsort(-1)[:, :nq] + 2 * kv
    inputs.scatter_(1, slots, k.gather(1, which))
    targets.scatter_(1, slots, v.gather(1, which))
    return MQARBatch(inputs, targets, kv, L, V, seed)
