"""Causal convolutions (finite impulse response filters) as causal operators.

A kernel ``h`` of length ``k`` gives the Toeplitz operator ``T[i, j] = h[i - j]`` for
``0 <= i - j < k``. Across a split only the last ``k - 1`` inputs still matter, so
the TSS is ``k - 1``. Its recurrence is a shift register holding the last ``k``
inputs: ``A`` shifts them down one slot (a dense, nilpotent ``A``), ``b = e_1``
writes the new input on top, ``c = h`` reads the filter output.
"""

from __future__ import annotations

import torch

from ._common import (
    batch_shape,
    check_length,
    check_ndim,
    check_nonempty,
    full_tss,
    promote,
    tensor,
    toeplitz,
)
from .base import CausalOperator

__all__ = ["convolution", "convolution_ref"]


def _check_kernel(h) -> torch.Tensor:
    h = tensor(h, "h", allow_empty=True)
    check_ndim(h, "h", 1, "(..., k)")
    if h.shape[-1] < 1:
        raise ValueError(f"`h` must hold a kernel of length k >= 1, got shape {tuple(h.shape)}.")
    check_nonempty(h, "h")
    return h


def convolution(h, L) -> CausalOperator:
    """A causal convolution with kernel ``h`` as a Toeplitz operator of length ``L``.

    Parameters
    ----------
    h : torch.Tensor or numpy.ndarray, shape (..., k)
        Kernel, ``h[0]`` on the diagonal (the current input). Leading dimensions
        are channels.
    L : int
        Sequence length, >= 2.

    Returns
    -------
    CausalOperator
        ``kind="convolution"``; ``dense()`` is ``(..., L, L)``; recurrence: a shift
        register of size ``min(k, L)`` with dense ``a`` of shape ``(..., L, m, m)``;
        ``tss = k - 1``.

    Examples
    --------
    >>> import torch
    >>> op = convolution(torch.tensor([1.0, 2.0], dtype=torch.float64), 4)
    >>> op.dense()
    tensor([[1., 0., 0., 0.],
            [2., 1., 0., 0.],
            [0., 2., 1., 0.],
            [0., 0., 2., 1.]], dtype=torch.float64)
    >>> op.tss
    tensor([1, 1, 1])
    """
    h = _check_kernel(h)
    L = check_length(L)
    k = h.shape[-1]
    m = min(k, L)  # taps past L never reach an L x L operator
    batch = h.shape[:-1]
    shift = torch.diag(h.new_ones(m - 1), -1)  # x_t[p] = x_(t-1)[p-1]
    e = h.new_zeros(m)
    e[0] = 1.0
    recurrence = (
        shift.expand(*batch, L, m, m),
        e.expand(*batch, L, m),
        h[..., None, :m].expand(*batch, L, m),
    )
    return CausalOperator(
        kind="convolution",
        length=L,
        tss=full_tss(L, k - 1, h.device),
        recurrence=recurrence,
        transition="dense",
        dense_fn=lambda: toeplitz(h, L),
    )


def convolution_ref(h, u) -> torch.Tensor:
    """Causal convolution ``y_t = sum_{m=0..min(k-1, t)} h[m] u_(t-m)``, by a loop.

    Parameters
    ----------
    h : torch.Tensor or numpy.ndarray, shape (..., k)
    u : torch.Tensor or numpy.ndarray, shape (..., L)
        Leading dimensions broadcast with those of ``h``.

    Returns
    -------
    torch.Tensor, shape (..., L)
    """
    h = _check_kernel(h)
    u = tensor(u, "u")
    check_ndim(u, "u", 1, "(..., L)")
    h, u = promote(h, u)
    batch = batch_shape(h=h.shape[:-1], u=u.shape[:-1])
    L, k = u.shape[-1], h.shape[-1]
    y = u.new_zeros(*batch, L)
    for t in range(L):
        for m in range(min(k, t + 1)):
            y[..., t] += h[..., m] * u[..., t - m]
    return y
