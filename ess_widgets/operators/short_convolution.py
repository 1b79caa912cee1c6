"""Gated short convolutions (LFM2, LFM3, Hyena-style) as causal operators per channel.

Per channel, an input gate ``B_t``, a causal filter ``h`` of length ``K`` and an
output gate ``C_t``::

    y_t = C_t sum_{m=0..K-1} h[m] B_(t-m) x_(t-m)

so, with the gates fixed, ``T[t, j] = C_t h[t - j] B_j`` for ``0 <= t - j < K``: an
input-dependent finite impulse response. Across a split only the last ``K - 1``
inputs still reach later outputs, so the TSS is ``K - 1``. Recurrence: a shift
register of the last ``K`` gated inputs (dense, nilpotent ``A``), ``b_t = B_t e_1``,
``c_t = C_t h``.
"""

from __future__ import annotations

import torch

from ._common import (
    batch_shape,
    check_length_of,
    check_ndim,
    check_size,
    full_tss,
    promote,
    tensor,
    toeplitz,
)
from .base import CausalOperator

__all__ = ["gated_short_convolution", "gated_short_convolution_ref"]


def _check_gated(h, B, C):
    h = tensor(h, "h")
    if h.ndim != 2 or h.shape[-1] < 1:
        raise ValueError(
            f"`h` must have shape (D, K): one filter of length K >= 1 per channel, "
            f"h[:, 0] on the diagonal; got shape {tuple(h.shape)}."
        )
    D = h.shape[0]
    B, C = tensor(B, "B"), tensor(C, "C")
    check_ndim(B, "B", 2, "(..., L, D)")
    check_ndim(C, "C", 2, "(..., L, D)")
    L = check_length_of(B, "B", -2)
    check_size(B, "B", -1, D, "channel count D", "`h` (its first dimension)")
    check_size(C, "C", -2, L, "sequence length L", "`B`")
    check_size(C, "C", -1, D, "channel count D", "`h` (its first dimension)")
    h, B, C = promote(h, B, C)
    batch = batch_shape(B=B.shape[:-2], C=C.shape[:-2])
    return h, B, C, batch, L, D


def gated_short_convolution(h, B, C) -> CausalOperator:
    """A gated short convolution ``T[t, j] = C_t h[t - j] B_j``, one operator per channel.

    Parameters
    ----------
    h : torch.Tensor or numpy.ndarray, shape (D, K)
        One causal filter per channel, ``h[:, 0]`` on the diagonal (the current
        input). A ``torch.nn.Conv1d`` weight ``(D, 1, K)`` used with ``K - 1`` left
        padding is ``weight[:, 0].flip(-1)`` here.
    B : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Input gate, multiplies the input before the filter.
    C : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Output gate, multiplies the filter's output.

    Returns
    -------
    CausalOperator
        ``kind="gated_short_convolution"``; ``dense()`` is ``(..., D, L, L)``;
        recurrence: a shift register of size ``m = min(K, L)``, dense ``a`` of shape
        ``(..., D, L, m, m)``, ``b`` and ``c`` of shape ``(..., D, L, m)``;
        ``tss = K - 1``.

    Examples
    --------
    >>> import torch
    >>> h = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> B = torch.tensor([[1.0], [10.0], [100.0]], dtype=torch.float64)
    >>> op = gated_short_convolution(h, B, torch.ones(3, 1, dtype=torch.float64))
    >>> op.dense()[0]
    tensor([[  1.,   0.,   0.],
            [  2.,  10.,   0.],
            [  0.,  20., 100.]], dtype=torch.float64)
    >>> op.tss
    tensor([1, 1])
    """
    h, B, C, batch, L, D = _check_gated(h, B, C)
    K = h.shape[-1]
    m = min(K, L)  # taps past L never reach an L x L operator
    B_c = B.expand(*batch, L, D).mT  # (..., D, L)
    C_c = C.expand(*batch, L, D).mT

    def dense() -> torch.Tensor:
        return C_c[..., :, None] * toeplitz(h, L) * B_c[..., None, :]

    shift = torch.diag(h.new_ones(m - 1), -1)  # x_t[p] = x_(t-1)[p-1]
    e = h.new_zeros(m)
    e[0] = 1.0
    a = shift.expand(*batch, D, L, m, m)
    b = B_c[..., None] * e
    c = C_c[..., None] * h[:, None, :m]
    return CausalOperator(
        kind="gated_short_convolution",
        transition="dense",
        length=L,
        tss=full_tss(L, K - 1, h.device),
        recurrence=(a, b, c),
        dense_fn=dense,
    )


def gated_short_convolution_ref(h, B, C, x) -> torch.Tensor:
    """``y_t = C_t sum_{m < min(K, t + 1)} h[m] B_(t-m) x_(t-m)``, by a loop.

    Parameters
    ----------
    h, B, C : as in ``gated_short_convolution``.
    x : torch.Tensor or numpy.ndarray, shape (..., L, D)

    Returns
    -------
    torch.Tensor, shape (..., L, D)
    """
    h, B, C, batch, L, D = _check_gated(h, B, C)
    x = tensor(x, "x")
    check_ndim(x, "x", 2, "(..., L, D)")
    check_size(x, "x", -2, L, "sequence length L", "`B`")
    check_size(x, "x", -1, D, "channel count D", "`h`")
    h, B, C, x = promote(h, B, C, x)
    batch = batch_shape(B=batch, x=x.shape[:-2])
    K = h.shape[-1]
    y = x.new_zeros(*batch, L, D)
    for t in range(L):
        acc = x.new_zeros(*batch, D)
        for m in range(min(K, t + 1)):
            acc = acc + h[:, m] * B[..., t - m, :] * x[..., t - m, :]
        y[..., t, :] = C[..., t, :] * acc
    return y
