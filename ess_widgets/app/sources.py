"""Where the explorer's numbers come from: a model on a text, or operators the user has.

A *source* has layers; each layer has one or more mixers, and each mixer ``C``
channels (operators on the same ``L`` tokens). ``source.layer(layer, mixer)``
returns a ``LayerSource``: what the dashboard needs to start a ``LayerData``
(tokens, channels, TSS, the dense operator of a channel) and
``spectra(channels, splits)``, the expensive step, computed chunk by chunk
(``iter_spectra``: split by split, for the dense path).

- ``ModelSource``: a loaded model (``ess_widgets.load``) and a text. Every layer is
  recorded in as few forward passes as the model's memory budget allows, once
  per text, and reused across layer switches.
- ``ArraySource``: causal operators ``(C, L, L)`` per layer, e.g. attention maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..adapters import OperatorHandle, load
from ..core import iter_spectra, spectra
from .dashboard import LayerData, split_costs

__all__ = ["LayerSource", "ModelSource", "ArraySource", "load_handle", "split_spectra"]

# Relative noise floor of the Gram path in float64 (sqrt(eps)): see ``spectra``.
_GRAM_FLOOR = float(np.sqrt(np.finfo(np.float64).eps))


def load_handle(model):
    """``ess_widgets.load(model)``: a handle for a name (the same one each time within a
    process for the built-in models), or the handle itself.

    transformers' per-tensor progress bars are kept out of the notebook output.
    """
    if not isinstance(model, (str, OperatorHandle)):
        raise TypeError(
            "`model` must be a model name (builtin_models(), a hub id, a folder) or a handle "
            f"from ess_widgets.load, got {type(model).__name__}."
        )
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        hf_logging = None
    quiet = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        return load(model)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------- spectra
def split_spectra(T: torch.Tensor, splits: Sequence[int]) -> torch.Tensor:
    """Singular values of ``T[..., i:, :i]`` for the given splits only: ``(..., n, L // 2)``.

    ``ess_widgets.spectra(T, splits=...)``: each row equals the full computation's.
    """
    return spectra(T, splits=[int(i) for i in splits])


def _noise_floor(dtype: torch.dtype, structured: bool) -> float:
    """Relative size below which singular values are rounding noise (``LayerData``)."""
    eps_in = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    if structured:  # recurrence in float64 from the operator's own factors
        return max(eps_in, float(np.finfo(np.float64).eps)) * 10
    if eps_in > float(np.finfo(np.float64).eps):  # the Gram path on a rounded operator
        return max(_GRAM_FLOOR, eps_in / 2)
    return float(np.finfo(np.float64).eps) * 10


@dataclass(eq=False)
class LayerSource:
    """One (layer, mixer) of a source: how to start its ``LayerData`` and fill it.

    Attributes
    ----------
    layer : int
    mixer, family, channel_name : str
    tokens : tuple of str
    num_channels : int
    width : int
        ``K``: singular values kept per split.
    structured : bool
        The spectra come from a recurrence (no ``L x L`` matrix).
    streams : bool
        ``iter_spectra`` yields split by split as it computes (the dense path), so a
        caller can stop between any two splits; otherwise it computes the whole
        chunk first.
    """

    layer: int
    mixer: str
    family: str
    channel_name: str
    tokens: tuple[str, ...]
    num_channels: int
    width: int
    structured: bool
    tss: np.ndarray | None
    noise_floor: float
    _dense: Callable[[int], torch.Tensor] = field(repr=False)
    _spectra: Callable[[list[int], list[int]], torch.Tensor] = field(repr=False)
    _iter: Callable[[list[int], list[int]], Iterator] | None = field(repr=False, default=None)

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def streams(self) -> bool:
        return self._iter is not None

    def dense(self, channel: int) -> np.ndarray:
        """Channel ``channel`` as an ``(L, L)`` float64 numpy array."""
        return self._dense(int(channel)).detach().to("cpu", torch.float64).numpy()

    def spectra(self, channels: Sequence[int], splits: Sequence[int]) -> np.ndarray:
        """Singular values ``(len(channels), len(splits), K)``, float64."""
        out = self._spectra([int(c) for c in channels], [int(i) for i in splits])
        return out.detach().to("cpu", torch.float64).numpy()

    def iter_spectra(
        self, channels: Sequence[int], splits: Sequence[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(split, values)``, values ``(len(channels), K)`` float64, each
        distinct split once: as computed where the source ``streams`` (outwards from
        the middle split; equal to ``spectra``'s rows bit for bit), else after one
        ``spectra`` call, in the order given."""
        channels, splits = [int(c) for c in channels], [int(i) for i in splits]
        if self._iter is None:
            values = self.spectra(channels, splits)
            seen = set()
            for j, i in enumerate(splits):
                if i not in seen:
                    seen.add(i)
                    yield i, values[:, j]
            return
        for i, row in self._iter(channels, splits):
            yield int(i), row.detach().to("cpu", torch.float64).numpy()

    def costs(self) -> np.ndarray:
        """Relative cost per split (``dashboard.split_costs``)."""
        return split_costs(self.length, self.structured)

    def channel_cost(self) -> float:
        """Fixed cost per channel and chunk, in the units of ``costs``: a structured path
        scans all ``L`` steps; the dense path chains Gram matrices from the middle split
        outwards (about one middle split's work)."""
        if self.structured:
            return float(self.length)
        return float(self.costs()[self.length // 2 - 1])

    def new_data(self) -> LayerData:
        """An empty ``LayerData`` for this layer."""
        return LayerData.empty(
            layer=self.layer,
            mixer=self.mixer,
            family=self.family,
            channel_name=self.channel_name,
            tokens=self.tokens,
            num_channels=self.num_channels,
            width=self.width,
            tss=self.tss,
            dense=self.dense,
            noise_floor=self.noise_floor,
        )


def _from_layer_operators(ops) -> LayerSource:
    """A ``LayerSource`` over a handle's ``LayerOperators``."""
    C, L = int(ops.num_channels), len(ops.tokens)
    # One channel's operator tells the kind, the dtype and (when it is the same for
    # every channel) the TSS: building all C would check every map once more.
    first = ops.build(torch.as_tensor([0], dtype=torch.int64))
    structured = first.recurrence is not None
    if structured:
        b = first.recurrence[1]
        width = min(int(b.shape[-1]), L // 2)
        dtype = b.dtype
    else:
        width = L // 2
        dtype = first.dense().dtype

    def dense(c: int) -> torch.Tensor:
        return ops.dense(channels=c)[0]

    def compute(channels: list[int], splits: list[int]) -> torch.Tensor:
        # the operator of these channels, not ops.spectra(): its cache would keep a second
        # copy of every chunk the LayerData already holds
        return ops.build(torch.as_tensor(channels, dtype=torch.int64)).spectra(splits=splits)

    def stream(channels: list[int], splits: list[int]):
        # the same T and path as compute(), so the same numbers, split by split
        T = ops.build(torch.as_tensor(channels, dtype=torch.int64)).dense()
        return iter_spectra(T, splits=splits)

    tss = first.tss
    if tss is not None:
        tss = tss.expand(C, L - 1) if tss.ndim < 2 else ops.tss
    return LayerSource(
        layer=int(ops.layer),
        mixer=str(ops.mixer),
        family=str(ops.kind),
        channel_name=str(ops.channel_label),
        tokens=tuple(str(t) for t in ops.tokens),
        num_channels=C,
        width=width,
        structured=structured,
        tss=None if tss is None else tss.detach().cpu().numpy().astype(np.float64),
        noise_floor=_noise_floor(dtype, structured),
        _dense=dense,
        _spectra=compute,
        _iter=None if structured else stream,
    )


# ----------------------------------------------------------------------------- model
def _all_fit(handle, L: int) -> bool:
    """Whether the records of every layer fit in the handle's memory budget together (with
    the largest working space of one layer on top): then one call records them all, in as
    few forward passes as the budget allows, and they are kept for this text."""
    prints = [spec.footprint(L) for spec in handle.specs()]
    together = sum(f.capture for f in prints) + max((f.peak - f.capture for f in prints), default=0)
    return together <= handle.memory_budget


class ModelSource:
    """A loaded model on one text.

    The text is tokenized at once, so that an empty or too long text fails here,
    before any layer is computed.

    Parameters
    ----------
    handle : a handle from ``ess_widgets.load``
    text : str
    max_tokens : int
        Refuse longer texts (the model's context length also applies).
    """

    def __init__(self, handle, text: str, *, max_tokens: int = 4096):
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError("The text is empty: type a few sentences and press compute.")
        self.handle = handle
        self.text = text
        enc = handle.encode(text)
        if len(enc) > max_tokens:
            raise ValueError(
                f"The text has {len(enc)} tokens; the explorer shows at most {max_tokens} "
                f"(max_tokens={max_tokens}). Shorten the text, or pass a larger max_tokens."
            )
        self.tokens = tuple(enc.tokens)
        self._ops: dict = {}  # (layer, mixer) -> LayerOperators, for this text

    @property
    def name(self) -> str:
        return str(self.handle.name)

    @property
    def num_layers(self) -> int:
        return int(self.handle.num_layers)

    def mixers(self, layer: int) -> list[str]:
        """The mixers of a block, in forward order (empty for an MLP-only block)."""
        return [str(m) for m in self.handle.mixers(layer)]

    def _record(self, layer: int, mixer: str):
        key = (layer, mixer)
        if key not in self._ops:
            layers = None if _all_fit(self.handle, len(self.tokens)) else [layer]
            recorded = self.handle.layer_operators(self.text, layers=layers)
            self._ops = dict(recorded) if layers else {**self._ops, **recorded}
        return self._ops[key]

    def layer(self, layer: int, mixer: str) -> LayerSource:
        """The ``LayerSource`` of a layer's mixer (a forward pass the first time)."""
        return _from_layer_operators(self._record(int(layer), str(mixer)))


class ArraySource:
    """Causal operators the user already has: one ``(C, L, L)`` array per layer.

    Parameters
    ----------
    layers : sequence of array-like
        Per layer, ``(C, L, L)`` or ``(L, L)`` (numpy or torch), rows outputs and
        columns inputs, zero above the diagonal. Attention maps ``(1, H, L, L)``
        lose their batch axis.
    tokens : sequence of str, optional
        The ``L`` token labels (positions ``0 .. L-1`` by default).
    tss : number or array broadcastable to (C, L-1), optional
        Theoretical state size, when known.
    channel_name : str, default "head"
        What one operator is called.
    mixer : str, default "operator"
    check_causal : bool, default True
        Refuse operators with entries above the diagonal.
    """

    name = "user data"

    def __init__(
        self,
        layers: Sequence,
        tokens=None,
        *,
        tss=None,
        channel_name: str = "head",
        mixer: str = "operator",
        check_causal: bool = True,
    ):
        arrays = [self._as_operator(T, k) for k, T in enumerate(layers)]
        if not arrays:
            raise ValueError("Pass at least one operator (C, L, L).")
        L = arrays[0].shape[-1]
        for k, T in enumerate(arrays):
            if T.shape[-1] != L:
                raise ValueError(
                    f"All layers need the same length L: layer 0 has L = {L}, layer {k} has "
                    f"shape {tuple(T.shape)}."
                )
        for k, T in enumerate(arrays):
            if not bool(torch.isfinite(T).all()):
                raise ValueError(f"Operator {k} holds NaN or Inf values.")
        if check_causal:
            for k, T in enumerate(arrays):
                upper = torch.triu(T, diagonal=1).abs().amax()
                if upper > 1e-6 * T.abs().amax():
                    raise ValueError(
                        f"Operator {k} is not causal: it has entries above the diagonal "
                        f"(largest {float(upper):.3g}). Pass rows as outputs and columns as "
                        "inputs, or check_causal=False to use only the lower part."
                    )
        if tokens is None:
            tokens = [str(t) for t in range(L)]
        tokens = tuple(str(t) for t in tokens)
        if len(tokens) != L:
            raise ValueError(f"`tokens` must have L = {L} entries, got {len(tokens)}.")
        self.arrays = arrays
        self.tokens = tokens
        self.tss = tss
        self.channel_name = channel_name
        self.mixer = mixer

    @staticmethod
    def _as_operator(T, k: int) -> torch.Tensor:
        t = T.detach().cpu() if isinstance(T, torch.Tensor) else torch.as_tensor(np.asarray(T))
        while t.ndim > 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[-1] != t.shape[-2] or t.shape[-1] < 2:
            raise ValueError(
                f"Operator {k} must have shape (C, L, L) or (L, L) with L >= 2 (attention: "
                f"(1, H, L, L) or (H, L, L)), got {tuple(t.shape)}."
            )
        if not t.is_floating_point():
            t = t.to(torch.float64)
        return t

    @property
    def num_layers(self) -> int:
        return len(self.arrays)

    def mixers(self, layer: int) -> list[str]:
        return [self.mixer]

    def layer(self, layer: int, mixer: str | None = None) -> LayerSource:
        T = self.arrays[layer]
        C, L = T.shape[0], T.shape[-1]
        tss = None
        if self.tss is not None:
            tss = np.broadcast_to(np.asarray(self.tss, dtype=np.float64), (C, L - 1))

        def compute(channels: list[int], splits: list[int]) -> torch.Tensor:
            return split_spectra(torch.tril(T[channels]), splits)

        def stream(channels: list[int], splits: list[int]):
            return iter_spectra(torch.tril(T[channels]), splits=splits)

        return LayerSource(
            layer=int(layer),
            mixer=self.mixer,
            family=self.mixer,
            channel_name=self.channel_name,
            tokens=self.tokens,
            num_channels=int(C),
            width=L // 2,
            structured=False,
            tss=tss,
            noise_floor=_noise_floor(T.dtype, False),
            _dense=lambda c: torch.tril(T[c]),
            _spectra=compute,
            _iter=stream,
        )
