"""Where the explorer's numbers come from: a model on a text, or operators the user has.

A *source* has layers; each layer has ``C`` operators (heads or channels) on the
same ``L`` tokens. ``layer_data(layer)`` computes one layer's split spectra once
(the expensive step); everything the explorer shows afterwards is derived from
the returned ``LayerData`` by cheap numpy operations (re-thresholding).

- ``ModelSource``: an ``ess_widgets.adapters.ModelHandle`` and a text.
- ``ArraySource``: causal operators ``(C, L, L)`` per layer, e.g. attention maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import entropy_ess, spectra, tolerance_ess

__all__ = ["LayerData", "ModelSource", "ArraySource", "threshold_ess"]


def threshold_ess(spectra: np.ndarray, tol: float, relative: bool = False) -> np.ndarray:
    """Tolerance-ESS of cached spectra in numpy: ``#{sigma > tol}`` (or ``> tol * sigma_1``).

    ``ess_widgets.tolerance_ess`` on numpy input, which stays in numpy: on a busy
    machine torch's thread pool costs more than these tiny operations.

    >>> threshold_ess(np.array([[3.0, 1.0, 1e-9]]), 1e-6).tolist()
    [2]
    """
    return tolerance_ess(np.asarray(spectra), tol, relative=relative).numpy()


@dataclass(frozen=True, eq=False)
class LayerData:
    """One layer's cached spectra and what the views need next to them.

    Attributes
    ----------
    layer : int
    kind : str
        ``"attention"``, ``"mamba"``, ``"mamba2"``, or ``"operator"`` for user data.
    channel : str
        What one operator is called: ``"head"`` or ``"channel"``.
    tokens : tuple of str
        The ``L`` token strings (untrusted text: the views escape it).
    spectra : numpy.ndarray, shape (C, L-1, K)
        Singular values of ``T[c, i:, :i]``, row ``i - 1``, float64.
    entropy : numpy.ndarray, shape (C, L-1)
        Entropy-ESS (tolerance-free, so computed once).
    tss : numpy.ndarray of shape (C, L-1), or None
        Theoretical state size, when known.
    dense : callable
        ``dense(c)`` returns operator ``c`` as an ``(L, L)`` numpy array.
    """

    layer: int
    kind: str
    channel: str
    tokens: tuple[str, ...]
    spectra: np.ndarray
    entropy: np.ndarray
    tss: np.ndarray | None
    dense: Callable[[int], np.ndarray] = field(repr=False)

    @property
    def num_channels(self) -> int:
        return int(self.spectra.shape[0])

    @property
    def length(self) -> int:
        return len(self.tokens)

    def tolerance_ess(self, tol: float, relative: bool = False) -> np.ndarray:
        """Tolerance-ESS ``(C, L-1)`` from the cached spectra."""
        return threshold_ess(self.spectra, tol, relative)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _layer_data(layer, kind, channel, tokens, s: torch.Tensor, tss, dense) -> LayerData:
    s64 = s.detach().to("cpu", torch.float64)
    return LayerData(
        layer=int(layer),
        kind=kind,
        channel=channel,
        tokens=tuple(str(t) for t in tokens),
        spectra=s64.numpy(),
        entropy=entropy_ess(s64).numpy(),
        tss=None if tss is None else _numpy(tss).astype(np.float64),
        dense=dense,
    )


class ModelSource:
    """A language model (``ModelHandle``) on one text.

    The text is tokenized at once, so that an empty or too long text fails here,
    before any layer is computed.

    Parameters
    ----------
    handle : ess_widgets.adapters.ModelHandle
    text : str
    max_tokens : int
        Refuse longer texts: the dense path costs about ``L^3`` per head.
    """

    def __init__(self, handle, text: str, *, max_tokens: int = 256):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The text is empty: type a few sentences and press compute.")
        self.handle = handle
        self.text = text
        enc = handle.encode(text)
        if len(enc) > max_tokens:
            raise ValueError(
                f"The text has {len(enc)} tokens; the explorer shows at most {max_tokens} "
                f"(max_tokens={max_tokens}). Shorten the text, or pass a larger max_tokens "
                "(the cost grows like L^3 per head)."
            )
        self.tokens = tuple(enc.tokens)

    @property
    def name(self) -> str:
        return str(self.handle.name)

    @property
    def num_layers(self) -> int:
        return int(self.handle.num_layers)

    def num_channels(self, layer: int) -> int:
        return int(self.handle.num_channels(layer))

    def layer_data(self, layer: int) -> LayerData:
        ops = self.handle.operators(self.text, layer)
        s = ops.spectra()

        def dense(c: int, ops=ops) -> np.ndarray:
            return _numpy(ops.dense(channels=int(c))[0]).astype(np.float64)

        return _layer_data(ops.layer, ops.kind, ops.channel_label, ops.tokens, s, ops.tss, dense)


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
    channel : str, default "head"
        What one operator is called.
    kind : str, default "operator"
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
        channel: str = "head",
        kind: str = "operator",
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
        if tokens is None:
            tokens = [str(t) for t in range(L)]
        tokens = tuple(str(t) for t in tokens)
        if len(tokens) != L:
            raise ValueError(f"`tokens` must have L = {L} entries, got {len(tokens)}.")
        self.arrays = arrays
        self.tokens = tokens
        self.tss = tss
        self.channel = channel
        self.kind = kind
        self.check_causal = check_causal

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
        return t

    @property
    def num_layers(self) -> int:
        return len(self.arrays)

    def num_channels(self, layer: int) -> int:
        return int(self.arrays[layer].shape[0])

    def layer_data(self, layer: int) -> LayerData:
        T = self.arrays[layer]
        s = spectra(T, check_causal=self.check_causal)
        C, L = T.shape[0], T.shape[-1]
        tss = None
        if self.tss is not None:
            tss = np.broadcast_to(_numpy(self.tss).astype(np.float64), (C, L - 1))

        def dense(c: int, T=T) -> np.ndarray:
            return torch.tril(T[int(c)]).to(torch.float64).numpy()

        return _layer_data(layer, self.kind, self.channel, self.tokens, s, tss, dense)
