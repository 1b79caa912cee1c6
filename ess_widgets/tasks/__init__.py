"""Synthetic tasks for probing how much memory a sequence model uses.

``mqar``: multi-query associative recall (Arora et al., Zoology, 2023), the task on
which the ESS paper compares ESS per key-value pair with accuracy; ``mqar_text``:
its readable text format (``format_mqar``, ``parse_mqar``, ``mqar_tokens``).
"""

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
]
