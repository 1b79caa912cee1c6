"""The explorer's dashboard on data the user already has: operators or attention maps.

>>> import torch
>>> T = torch.tril(torch.rand(2, 16, 16))
>>> show_operator(T, tol=1e-3)  # doctest: +SKIP
>>> out = model(ids, output_attentions=True)  # doctest: +SKIP
>>> show_attention(out.attentions, tokens)  # doctest: +SKIP
"""

from __future__ import annotations

from ..core import DEFAULT_TOL
from .explorer import Explorer
from .sources import ArraySource

__all__ = ["show_operator", "show_attention"]


def show_operator(
    T,
    tokens=None,
    *,
    tol: float = DEFAULT_TOL,
    relative: bool = False,
    split: int | None = None,
    head: int = 0,
    tss=None,
    channel: str = "head",
    title: str | None = None,
    check_causal: bool = True,
) -> Explorer:
    """The ESS dashboard of any causal operator(s): spectrum, ESS curves, tokens, heatmap.

    Parameters
    ----------
    T : array-like of shape (C, L, L) or (L, L), or a list of those (one per layer)
        Causal operators ``y = T u`` (rows outputs, columns inputs, zero above the
        diagonal), numpy or torch.
    tokens : sequence of str, optional
        ``L`` labels of the positions (``"0" .. "L-1"`` by default).
    tol, relative, split, head
        The initial state, as in ``Explorer``.
    tss : number or array broadcastable to (C, L-1), optional
        The theoretical state size, drawn when given.
    channel : str, default "head"
        What one operator is called in the labels (``"channel"`` for SSMs).
    title : str, optional
    check_causal : bool, default True
        Refuse operators with non-zero entries above the diagonal.

    Returns
    -------
    Explorer
        Without the model and text controls; ``layer`` picks among the given layers.
        The spectra are computed in the background: ``.wait()`` for the complete view.
    """
    layers = list(T) if isinstance(T, (list, tuple)) else [T]
    source = ArraySource(layers, tokens, tss=tss, channel_name=channel, check_causal=check_causal)
    return Explorer.from_source(
        source,
        title=title or "Effective state-size of your operators",
        head=head,
        tol=tol,
        relative=relative,
        split=split,
    )


def show_attention(
    attentions,
    tokens=None,
    *,
    tol: float = DEFAULT_TOL,
    relative: bool = False,
    split: int | None = None,
    layer: int = 0,
    head: int = 0,
    title: str | None = None,
) -> Explorer:
    """The ESS dashboard of attention maps, bertviz-style input.

    Parameters
    ----------
    attentions : tuple of tensors (1, H, L, L) or (H, L, L), one per layer, or one tensor
        What ``model(..., output_attentions=True).attentions`` returns (eager
        attention), or a single layer's maps.
    tokens : sequence of str, optional
        The ``L`` tokens, e.g. ``tokenizer.convert_ids_to_tokens(ids)``.
    tol, relative, split, layer, head
        The initial state, as in ``Explorer``. The TSS of softmax attention (``i``
        cached positions at split ``i``) is drawn.

    Returns
    -------
    Explorer
    """
    if hasattr(attentions, "shape") and len(attentions.shape) in (2, 3):
        layers = [attentions]
    elif hasattr(attentions, "shape") and len(attentions.shape) == 4 and attentions.shape[0] != 1:
        layers = list(attentions)  # (layers, H, L, L)
    elif hasattr(attentions, "shape"):
        layers = [attentions]
    else:
        layers = list(attentions)
    source = ArraySource(layers, tokens, channel_name="head", mixer="attention")
    L = len(source.tokens)
    source.tss = list(range(1, L))  # softmax attention keeps every position: TSS = i
    return Explorer.from_source(
        source,
        title=title or "Effective state-size of attention maps",
        layer=layer,
        head=head,
        tol=tol,
        relative=relative,
        split=split,
    )
