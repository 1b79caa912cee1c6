"""What every mixer adapter provides, and the memory estimates they share.

An adapter turns one kind of sequence mixer (``"attention"``, ``"mamba"``,
``"mamba2"``, ...) into causal operators in three steps:

1. ``recording(layers, store)``: a context manager that, during one forward pass
   of the model, puts what the operators need (attention maps; dt, A, B, C) into
   ``store[layer.key]`` (``layer.key`` is ``(layer index, mixer name)``);
2. ``operator(record, layer)``: a ``CausalOperator`` from one layer's record, with
   ``C`` operators (heads or channels) of length ``L``;
3. ``footprint(layer, config, L)``: bytes the capture, the spectra and the dense
   operators need, estimated before anything is allocated.

A new adapter is a subclass in its own module of ``ess_widgets/adapters/`` that
sets the class attributes below and registers itself at import::

    register_adapter(MyAdapter(), classes=("MyMixer",))
    register_family("my_model_type", "MyModel", "hybrid")

(``architectures``). ``state_size(layer, config)`` (the recurrence's ``N``; None for
a dense path) feeds the cost estimates (``estimate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..operators.base import CausalOperator
from .architectures import MixerLayer

__all__ = ["Footprint", "MixerAdapter", "GiB", "format_bytes", "hooks_held"]

GiB = 2**30


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable string (``"1.5 GiB"``)."""
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes for one layer at one sequence length.

    Attributes
    ----------
    capture : int
        What the recording keeps per layer until its operators are built.
    peak : int
        The most the forward pass and the spectra of this layer need at once
        (the capture included).
    dense : int
        The dense operators ``(C, L, L)`` of the layer.
    """

    capture: int
    peak: int
    dense: int


class MixerAdapter:
    """Base class of the per-kind adapters (see the module docstring).

    Attributes
    ----------
    name : str
        Registry key (``"attention"``, ``"mamba"``, ``"mamba2"``).
    mixer : str
        The name of the mixer in its block (``"attention"``, ``"ssm"``,
        ``"linear_attention"``, ``"conv"``): the table's ``mixer`` column.
    kind : str
        The operator family (``"softmax_attention"``, ``"selective_ssm"``, ``"ssd"``):
        the table's ``kind`` column, as ``CausalOperator.kind``.
    channel_label : str
        What users call one channel (one operator): ``"head"`` or ``"channel"``.
    transition : str
        The recurrence's ``A``: ``"diagonal"``, ``"dense"`` or ``"delta"`` (a
        ``DeltaTransition``); sets the cost model of ``estimate``.
    """

    name: str = ""
    mixer: str = ""
    kind: str = ""
    channel_label: str = "channel"
    transition: str = "diagonal"

    def state_size(self, layer: MixerLayer, config) -> int | None:
        """``N`` of the recurrence the spectra run through; None for the dense path."""
        return None

    def num_channels(self, layer: MixerLayer, config) -> int:
        """Number of operators ``C`` of the layer."""
        raise NotImplementedError

    def recording(self, layers: list[MixerLayer], store: dict) -> contextlib.AbstractContextManager:
        """Context manager that fills ``store[layer.index]`` during a forward pass."""
        raise NotImplementedError

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        """The layer's operators ``(C, L, L)`` from its record; ``index`` selects
        heads or channels (an int64 tensor), all by default."""
        raise NotImplementedError

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        """Estimated memory for the layer at sequence length ``L``."""
        raise NotImplementedError


@contextlib.contextmanager
def hooks_held(handles: Iterable, store: dict):
    """Yield ``store`` while the hooks are registered; remove every one afterwards.

    ``handles`` may be a generator that registers the hooks as it goes: those
    registered before a failure are still removed.
    """
    held = []
    try:
        for handle in handles:
            held.append(handle)
        yield store
    finally:
        for handle in held:
            handle.remove()
