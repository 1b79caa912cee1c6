"""Synthetic tasks for probing how much memory a sequence model uses.

``mqar``: multi-query associative recall (Arora et al., Zoology, 2023), the task on
which the ESS paper compares ESS per key-value pair with accuracy; ``mqar_text``:
its readable text format (``format_mqar``, ``parse_mqar``, ``mqar_tokens``).
``copying``: selective copying and compression (``selective_copying``,
``compression``) and their text format (``format_copy``, ``parse_copy``,
``copy_tokens``). ``make_batch(task, ...)`` picks a generator by name.
"""

from .copying import (
    DELIMITER,
    TaskBatch,
    compression,
    copy_tokens,
    format_copy,
    parse_copy,
    selective_copying,
)
from .mqar import FILLER, IGNORE_INDEX, MQARBatch, mqar, mqar_vocab
from .mqar_text import format_mqar, mqar_tokens, parse_mqar

__all__ = [
    "mqar",
    "MQARBatch",
    "mqar_vocab",
    "IGNORE_INDEX",
    "FILLER",
    "format_mqar",
    "parse_mqar",
    "mqar_tokens",
    "selective_copying",
    "compression",
    "TaskBatch",
    "DELIMITER",
    "copy_tokens",
    "format_copy",
    "parse_copy",
    "TASKS",
    "make_batch",
    "task_tokens",
]

TASKS = ("mqar", "selective_copying", "compression")


def make_batch(
    task: str, num_examples: int, *, num_items: int, seq_len: int, vocab_size: int, seed: int
):
    """A batch of ``task`` (one of ``TASKS``) with ``num_items`` items to remember.

    ``num_items`` is ``num_pairs`` (MQAR) or ``num_tokens`` (selective copying,
    compression). Compression's length is fixed by ``num_items``
    (``2 * num_items``): ``seq_len`` must equal it.
    """
    if task == "mqar":
        return mqar(
            num_examples, num_pairs=num_items, seq_len=seq_len, vocab_size=vocab_size, seed=seed
        )
    if task == "selective_copying":
        return selective_copying(
            num_examples, num_tokens=num_items, seq_len=seq_len, vocab_size=vocab_size, seed=seed
        )
    if task == "compression":
        if seq_len != 2 * num_items:
            raise ValueError(
                f"`seq_len` of compression is 2 * num_items = {2 * num_items}, got {seq_len}."
            )
        return compression(num_examples, num_tokens=num_items, vocab_size=vocab_size, seed=seed)
    raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")


def task_tokens(task: str, ids, vocab_size: int) -> tuple[str, ...]:
    """Readable token labels in ``task``'s text format."""
    if task == "mqar":
        return mqar_tokens(ids, vocab_size)
    if task in ("selective_copying", "compression"):
        return copy_tokens(ids, vocab_size)
    raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
