"""Synthetic tasks for probing how much memory a sequence model uses.

``mqar``: multi-query associative recall (Arora et al., Zoology, 2023), the task on
which the ESS paper (docs/definitions.md, what the paper reports) compares ESS per
key-value pair with accuracy.
"""

from .mqar import IGNORE_INDEX, MQARBatch, mqar, mqar_vocab

__all__ = ["mqar", "MQARBatch", "mqar_vocab", "IGNORE_INDEX"]
