"""Softmax attention as a causal operator, one per head.

Once its scores are fixed, causal softmax attention is linear in the values:
``y = T v`` with ``T[i, j] = softmax_j(q_i . k_j * scale)`` over ``j <= i`` (and
``i - j < w`` for a sliding window of width ``w``). The same ``T`` acts on every
value channel of a head. There is no finite recurrence: the state (the KV cache)
grows with the sequence, so the TSS at split ``i`` is ``i`` (or ``min(i, w)``).
"""

from __future__ import annotations

import math
import operator

import torch

from ..core._validation import CAUSAL_RTOL, check_operator
from ._common import (
    batch_shape,
    check_length_of,
    check_ndim,
    check_nonempty,
    check_size,
    promote,
    tensor,
)
from .base import CausalOperator

__all__ = ["softmax_attention", "attention_operator", "softmax_attention_ref"]


def _check_window(window) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool):
        raise TypeError("`window` must be an int >= 1 or None, got bool.")
    try:
        w = operator.index(window)
    except TypeError:
        raise TypeError(
            f"`window` must be an int >= 1 or None, got {type(window).__name__} {window!r}."
        ) from None
    if w < 1:
        raise ValueError(
            f"`window` must be >= 1 (the number of positions a query sees, itself "
            f"included), got window = {w}. Use window=None for full causal attention."
        )
    return w


def _check_scale(scale, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"`scale` must be a number or None, got {type(scale).__name__}.") from None
    if not math.isfinite(value):
        raise ValueError(f"`scale` must be finite, got {scale!r}. Leave it None for 1/sqrt(d).")
    return value


def _check_qk(q, k):
    q, k = promote(tensor(q, "q"), tensor(k, "k"))
    check_ndim(q, "q", 2, "(..., L, d)")
    check_ndim(k, "k", 2, "(..., L, d)")
    L = check_length_of(q, "q", -2)
    check_size(k, "k", -2, L, "sequence length L", "`q`")
    check_size(k, "k", -1, q.shape[-1], "key dimension d", "`q`")
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2])
    return q, k, L, batch


def _visible(L: int, window: int | None, device) -> torch.Tensor:
    """Boolean ``(L, L)`` mask of the keys each query sees: ``0 <= i - j < window``."""
    lag = torch.arange(L, device=device)
    lag = lag[:, None] - lag[None, :]
    mask = lag >= 0
    if window is not None:
        mask &= lag < window
    return mask


def _attention_tss(L: int, window: int | None, device) -> torch.Tensor:
    # The KV cache after reading tokens 0..i-1 holds i entries, or the last w of them.
    split = torch.arange(1, L, dtype=torch.int64, device=device)
    return split if window is None else split.clamp(max=window)


def softmax_attention(q, k, *, window=None, scale=None) -> CausalOperator:
    """Causal softmax attention ``T = softmax(q k^T * scale)``, one operator per head.

    Parameters
    ----------
    q : torch.Tensor or numpy.ndarray, shape (..., L, d)
        Queries (leading dimensions: batch, heads).
    k : torch.Tensor or numpy.ndarray, shape (..., L, d)
        Keys; leading dimensions broadcast with those of ``q``.
    window : int, optional
        Sliding-window width ``w >= 1``: query ``i`` sees keys ``j`` with
        ``0 <= i - j < w`` (itself and ``w - 1`` earlier ones). None: all ``j <= i``.
    scale : float, optional
        Score scale; ``1 / sqrt(d)`` by default.

    Returns
    -------
    CausalOperator
        ``kind="softmax_attention"``; ``dense()`` is ``(..., L, L)`` with rows summing
        to 1 and zeros above the diagonal (and outside the window); ``tss`` is ``i``
        at split ``i`` (``min(i, w)`` with a window: the cache slots); no recurrence.
        The rank of a split block is at most ``min(i, L - i)``, and at most ``w - 1``
        with a window (a query sees ``w - 1`` earlier keys).

    Examples
    --------
    >>> import torch
    >>> q = k = torch.zeros(1, 4, 2, dtype=torch.float64)  # equal scores: running mean
    >>> op = softmax_attention(q, k)
    >>> op.dense()[0]
    tensor([[1.0000, 0.0000, 0.0000, 0.0000],
            [0.5000, 0.5000, 0.0000, 0.0000],
            [0.3333, 0.3333, 0.3333, 0.0000],
            [0.2500, 0.2500, 0.2500, 0.2500]], dtype=torch.float64)
    >>> op.tss
    tensor([1, 2, 3])
    """
    q, k, L, batch = _check_qk(q, k)
    w = _check_window(window)
    s = _check_scale(scale, q.shape[-1])

    def dense() -> torch.Tensor:
        scores = (q @ k.mT) * s
        # -inf before the softmax gives exact zeros; the diagonal is always visible.
        scores = scores.masked_fill(~_visible(L, w, q.device), -torch.inf)
        return torch.softmax(scores, dim=-1)

    return CausalOperator(
        kind="softmax_attention",
        length=L,
        tss=_attention_tss(L, w, q.device),
        recurrence=None,
        dense_fn=dense,
        batch_shape=tuple(batch),
        dtype=q.dtype,
    )


def attention_operator(weights, *, window=None) -> CausalOperator:
    """Wrap given causal attention maps (e.g. a model's attention probabilities).

    Parameters
    ----------
    weights : torch.Tensor or numpy.ndarray, shape (..., L, L)
        Attention maps, rows are queries (outputs), columns keys (inputs); causal
        and finite. Rows need not sum to 1 (dropout, head mixing).
    window : int, optional
        Sliding-window width the maps were computed with; sets the TSS and is
        checked: entries with ``i - j >= window`` must be zero.

    Returns
    -------
    CausalOperator
        ``kind="softmax_attention"``, ``dense()`` the maps (not copied) or, where
        there are rounding crumbs above the diagonal (below 1e-6 of the largest
        entry), a copy with them set to zero; the TSS as in ``softmax_attention``;
        no recurrence.

    Examples
    --------
    >>> import torch
    >>> op = attention_operator(torch.tril(torch.ones(3, 3, dtype=torch.float64)))
    >>> op.length, op.tss
    (3, tensor([1, 2]))
    """
    t = check_operator(weights, "weights")
    check_nonempty(t, "weights")
    L = t.shape[-1]
    w = _check_window(window)
    if w is not None:
        outside = (~_visible(L, w, t.device)) & _visible(L, None, t.device)
        largest = t.masked_fill(~outside, 0.0).abs().amax()
        if largest > CAUSAL_RTOL * t.abs().amax():
            raise ValueError(
                f"`weights` has non-zero entries outside the sliding window of width "
                f"{w} (largest {float(largest):.3g} at some i - j >= {w}). Pass the "
                "window the maps were computed with, or window=None."
            )
    hidden = ~_visible(L, w, t.device)
    # Hand out the maps themselves (no copy of a large (H, L, L) tensor) unless there
    # are crumbs to clear.
    crumbs = bool(t.masked_fill(~hidden, 0.0).any())

    def dense() -> torch.Tensor:
        return t.masked_fill(hidden, 0.0) if crumbs else t

    return CausalOperator(
        kind="softmax_attention",
        length=L,
        tss=_attention_tss(L, w, t.device),
        recurrence=None,
        dense_fn=dense,
    )


def softmax_attention_ref(q, k, v, *, window=None, scale=None) -> torch.Tensor:
    """Causal (sliding-window) softmax attention, one output position at a time.

    Reference for ``softmax_attention``: ``y_i = sum_j softmax_j(q_i . k_j * scale) v_j``
    over the visible ``j`` (``max(0, i - w + 1) <= j <= i``).

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d)
    v : torch.Tensor or numpy.ndarray, shape (..., L, d_v)
    window, scale : as in ``softmax_attention``.

    Returns
    -------
    torch.Tensor, shape (..., L, d_v)
    """
    q, k, L, batch = _check_qk(q, k)
    q, k, v = promote(q, k, tensor(v, "v"))
    check_ndim(v, "v", 2, "(..., L, d_v)")
    check_size(v, "v", -2, L, "sequence length L", "`q`")
    batch = batch_shape(q=batch, v=v.shape[:-2])
    w = _check_window(window)
    s = _check_scale(scale, q.shape[-1])
    y = q.new_zeros(*batch, L, v.shape[-1])
    for i in range(L):
        lo = 0 if w is None else max(0, i - w + 1)
        scores = (k[..., lo : i + 1, :] @ q[..., i, :, None]).squeeze(-1) * s
        p = torch.softmax(scores, dim=-1)
        y[..., i, :] = (p[..., None, :] @ v[..., lo : i + 1, :]).squeeze(-2)
    return y
