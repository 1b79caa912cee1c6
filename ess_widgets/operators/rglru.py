"""The RG-LRU (Griffin, Hawk, RecurrentGemma) as one causal operator per channel.

Per channel, with the recurrence gate ``a_t = exp(log_a_t)`` (RecurrentGemma:
``log_a_t = -8 r_t softplus(Lambda)``, ``r_t`` the recurrence gate's sigmoid) and the
input gate ``i_t`` (a sigmoid)::

    h_t = a_t h_(t-1) + m_t i_t x_t,    m_t = sqrt(1 - a_t^2)   (m_0 = 1, h_(-1) = 0)

The first step is a document start: the model resets the state there and does not
scale the input (``m_0 = 1``). With the gates fixed this is linear in ``x``:

    T[t, j] = a_(j+1) ... a_t * m_j i_j    (j <= t),

a diagonal recurrence with one state per channel: TSS 1.
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
    segsum,
    tensor,
)
from .base import CausalOperator

__all__ = ["rg_lru", "rg_lru_ref"]


def _check_rglru(log_a, input_gate):
    log_a = tensor(log_a, "log_a")
    gate = tensor(input_gate, "input_gate")
    check_ndim(log_a, "log_a", 2, "(..., L, D)")
    check_ndim(gate, "input_gate", 2, "(..., L, D)")
    L = check_length_of(log_a, "log_a", -2)
    check_size(gate, "input_gate", -2, L, "sequence length L", "`log_a`")
    check_size(gate, "input_gate", -1, log_a.shape[-1], "channel count D", "`log_a`")
    if bool((log_a > 0).any()):
        raise ValueError(
            f"`log_a` must be <= 0 (the logarithm of a gate in (0, 1]), got "
            f"{int((log_a > 0).sum())} positive entries (max {float(log_a.max()):.3g}). "
            "Pass log_a = -8 * sigmoid(recurrence gate) * softplus(recurrent_param)."
        )
    log_a, gate = promote(log_a, gate)
    batch = batch_shape(log_a=log_a.shape[:-2], input_gate=gate.shape[:-2])
    return log_a, gate, batch, L, log_a.shape[-1]


def _input_scale(log_a: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``m_t i_t`` with ``m_t = sqrt(1 - a_t^2)`` and ``m_0 = 1`` (the document start)."""
    # 1 - a^2 = -expm1(2 log a): accurate when a is close to 1.
    multiplier = torch.sqrt(-torch.expm1(2.0 * log_a))
    multiplier[..., 0, :] = 1.0
    return multiplier * gate


def rg_lru(log_a, input_gate) -> CausalOperator:
    """The RG-LRU's input-to-state map, one operator per channel.

    Parameters
    ----------
    log_a : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Log of the recurrence gate ``a_t``, <= 0 (RecurrentGemma:
        ``-8 * sigmoid(recurrence gate) * softplus(recurrent_param)``).
    input_gate : torch.Tensor or numpy.ndarray, shape (..., L, D)
        The input gate ``i_t`` (after its sigmoid).

    Returns
    -------
    CausalOperator
        ``kind="rg_lru"``; ``dense()`` is ``(..., D, L, L)``; recurrence ``a = a_t``,
        ``b = m_t i_t``, ``c = 1``, each ``(..., D, L, 1)``; ``tss = 1``.

    Examples
    --------
    >>> import torch
    >>> log_a = torch.full((3, 1), -0.5, dtype=torch.float64)
    >>> op = rg_lru(log_a, torch.ones(3, 1, dtype=torch.float64))
    >>> op.dense()[0, :, 0]  # the first input, decayed by a = e^-0.5 per step
    tensor([1.0000, 0.6065, 0.3679], dtype=torch.float64)
    """
    log_a, gate, batch, L, D = _check_rglru(log_a, input_gate)
    log_a = log_a.expand(*batch, L, D)
    scale = _input_scale(log_a, gate.expand(*batch, L, D))
    log_a_c, scale_c = log_a.mT, scale.mT  # (..., D, L)

    def dense() -> torch.Tensor:
        return torch.exp(segsum(log_a_c)) * scale_c[..., None, :]

    return CausalOperator(
        kind="rg_lru",
        transition="diagonal",
        length=L,
        tss=full_tss(L, 1, log_a.device),
        recurrence=(
            torch.exp(log_a_c)[..., None],
            scale_c[..., None],
            torch.ones_like(scale_c)[..., None],
        ),
        dense_fn=dense,
    )


def rg_lru_ref(x, log_a, input_gate) -> torch.Tensor:
    """The RG-LRU recurrence, one step at a time.

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray, shape (..., L, D)
        The input (RecurrentGemma: the output of the short convolution).
    log_a, input_gate : as in ``rg_lru``.

    Returns
    -------
    torch.Tensor, shape (..., L, D)
        ``h_t = a_t h_(t-1) + sqrt(1 - a_t^2) i_t x_t`` (no scaling at ``t = 0``).
    """
    log_a, gate, batch, L, D = _check_rglru(log_a, input_gate)
    x = tensor(x, "x")
    check_ndim(x, "x", 2, "(..., L, D)")
    check_size(x, "x", -2, L, "sequence length L", "`log_a`")
    check_size(x, "x", -1, D, "channel count D", "`log_a`")
    x, log_a, gate = promote(x, log_a, gate)
    batch = batch_shape(log_a=batch, x=x.shape[:-2])
    h = x.new_zeros(*batch, D)
    y = x.new_zeros(*batch, L, D)
    for t in range(L):
        a = torch.exp(log_a[..., t, :])
        m = torch.sqrt(1 - a * a) if t > 0 else torch.ones_like(a)
        h = a * h + m * gate[..., t, :] * x[..., t, :]
        y[..., t, :] = h
    return y
