"""RWKV-4's WKV as one causal operator per channel.

Per channel, with the per-step log-decay ``w <= 0`` (RWKV-4: ``w = -exp(time_decay)``),
the bonus ``u`` (``time_first``) and the keys ``k_t``, WKV reads::

    y_t = (sum_{j<t} e^(w (t-1-j) + k_j) v_j + e^(u + k_t) v_t) / Z_t
    Z_t =  sum_{j<t} e^(w (t-1-j) + k_j)     + e^(u + k_t)

With the keys fixed this is linear in the values, ``y = T v`` with

    T[t, j] = e^(w (t-1-j) + k_j) / Z_t    (j < t),    T[t, t] = e^(u + k_t) / Z_t,

a softmax over ``j <= t`` of the logits ``w (t-1-j) + k_j`` and ``u + k_t``: every row
sums to 1. The bonus only touches the diagonal, which never enters a split block
``T[i:, :i]``. Everything before a split reaches the outputs after it through one
number per channel (the running numerator), so the TSS is 1.

Recurrence (the core's form ``x_t = A_t x_(t-1) + b_t v_t, y_t = c_t . x_t``): the
output at ``t`` reads the numerator *before* step ``t`` decays it, one decay fewer
than a plain diagonal recurrence gives, so the state here is ``(s_t, p_t)``: the
past numerator ``s_t``, divided by its denominator to keep every entry in [0, 1], and
the current input ``p_t = v_t``::

    A_t = [[a_t, g_t], [0, 0]],   b_t = (0, 1),   c_t = (D_(t-1) / Z_t, e^(u + k_t) / Z_t)

with ``D_t = sum_{j<=t} e^(w (t-j) + k_j)``, ``a_t = e^w D_(t-2) / D_(t-1)`` and
``g_t = e^(k_(t-1)) / D_(t-1)``. Its operator is ``T``, diagonal included. Two state
entries, but the second holds only the current input: the rank of every split
block stays at most 1.
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
)
from .base import CausalOperator

__all__ = ["wkv4", "wkv4_ref"]


def _check_wkv(log_decay, bonus, k):
    k = tensor(k, "k")
    check_ndim(k, "k", 2, "(..., L, D)")
    L = check_length_of(k, "k", -2)
    D = k.shape[-1]
    w = tensor(log_decay, "log_decay")
    u = tensor(bonus, "bonus")
    check_ndim(w, "log_decay", 1, "(..., D)")
    check_ndim(u, "bonus", 1, "(..., D)")
    check_size(w, "log_decay", -1, D, "channel count D", "`k` (its last dimension)")
    check_size(u, "bonus", -1, D, "channel count D", "`k` (its last dimension)")
    if bool((w > 0).any()):
        raise ValueError(
            f"`log_decay` must be <= 0 (the logarithm of a decay in (0, 1]), got "
            f"{int((w > 0).sum())} positive entries (max {float(w.max()):.3g}). RWKV-4 "
            "stores time_decay: pass log_decay = -torch.exp(time_decay)."
        )
    k, w, u = promote(k, w, u)
    batch = batch_shape(k=k.shape[:-2], log_decay=w.shape[:-1], bonus=u.shape[:-1])
    return k, w, u, batch, L, D


def _logits(k, w, u, L):
    """``(..., D, L, L)`` logits of the row softmax, ``-inf`` above the diagonal."""
    k_c = k.mT  # (..., D, L)
    t = torch.arange(L, device=k.device, dtype=k.dtype)
    lag = (t[:, None] - t[None, :] - 1).clamp(min=0)  # t - 1 - j, only used below the diagonal
    logits = w[..., :, None, None] * lag + k_c[..., None, :]
    diagonal = u[..., :, None] + k_c  # (..., D, L): u + k_t
    eye = torch.eye(L, dtype=torch.bool, device=k.device)
    logits = torch.where(eye, diagonal[..., :, None], logits)
    upper = torch.triu(torch.ones(L, L, dtype=torch.bool, device=k.device), 1)
    return logits.masked_fill(upper, -torch.inf)


def wkv4(log_decay, bonus, k) -> CausalOperator:
    """RWKV-4's WKV, one causal operator per channel (see the module docstring).

    Parameters
    ----------
    log_decay : torch.Tensor or numpy.ndarray, shape (..., D)
        Per-step log-decay ``w <= 0`` of each channel (RWKV-4:
        ``-torch.exp(time_decay)``).
    bonus : torch.Tensor or numpy.ndarray, shape (..., D)
        The bonus ``u`` of the current token (RWKV-4: ``time_first``).
    k : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Keys, one per channel and step.

    Returns
    -------
    CausalOperator
        ``kind="wkv4"``; ``dense()`` is ``(..., D, L, L)``, each row a softmax (sums to
        1); recurrence: dense 2 x 2 ``a`` of shape ``(..., D, L, 2, 2)``, ``b`` and ``c``
        of shape ``(..., D, L, 2)`` (module docstring); ``tss = 1``.

    Examples
    --------
    >>> import torch
    >>> op = wkv4(torch.tensor([-0.5]), torch.tensor([0.0]), torch.zeros(3, 1))
    >>> op.dense()[0].sum(-1)  # every row is a weighted mean of the values seen
    tensor([1.0000, 1.0000, 1.0000])
    >>> op.tss  # one state per channel at each of the L - 1 splits
    tensor([1, 1])
    """
    k, w, u, batch, L, D = _check_wkv(log_decay, bonus, k)
    k = k.expand(*batch, L, D)
    w = w.expand(*batch, D)
    u = u.expand(*batch, D)

    def dense() -> torch.Tensor:
        return torch.softmax(_logits(k, w, u, L), dim=-1)

    # log D_t = w t + logcumsumexp_j (k_j - w j). The two large terms cancel to about
    # |w| L * 1e-16 (float64): 1e-9 even for w = -1e4 at L = 1e4.
    k_c = k.mT  # (..., D, L)
    t = torch.arange(L, device=k.device, dtype=k.dtype)
    wt = w[..., None] * t  # (..., D, L)
    log_den = wt + torch.logcumsumexp(k_c - wt, dim=-1)
    # D_(t-1) per step t, with D_(-1) = 0 (log -inf) before the first token.
    log_prev = torch.cat([torch.full_like(k_c[..., :1], -torch.inf), log_den[..., :-1]], dim=-1)
    log_z = torch.logaddexp(log_prev, u[..., None] + k_c)
    a = k_c.new_zeros(*k_c.shape, 2, 2)
    # a_t = e^w D_(t-2) / D_(t-1) and g_t = e^(k_(t-1)) / D_(t-1), for t >= 1.
    a[..., 1:, 0, 0] = torch.exp(w[..., None] + log_prev[..., :-1] - log_prev[..., 1:])
    a[..., 1:, 0, 1] = torch.exp(k_c[..., :-1] - log_prev[..., 1:])
    b = k_c.new_zeros(*k_c.shape, 2)
    b[..., 1] = 1.0
    c = torch.stack([torch.exp(log_prev - log_z), torch.exp(u[..., None] + k_c - log_z)], dim=-1)
    return CausalOperator(
        kind="wkv4",
        transition="dense",
        length=L,
        tss=full_tss(L, 1, k.device),
        recurrence=(a, b, c),
        dense_fn=dense,
    )


def wkv4_ref(log_decay, bonus, k, v) -> torch.Tensor:
    """WKV-4 by its definition, one step at a time (numerator and denominator sums).

    Parameters
    ----------
    log_decay, bonus, k : as in ``wkv4``.
    v : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Values.

    Returns
    -------
    torch.Tensor, shape (..., L, D)
        ``y_t = (num_t + e^(u + k_t) v_t) / (den_t + e^(u + k_t))`` with
        ``num_t = sum_{j<t} e^(w (t-1-j) + k_j) v_j`` and ``den_t`` the same sum of
        ``e^(w (t-1-j) + k_j)``; no max-shift (use float64).
    """
    k, w, u, batch, L, D = _check_wkv(log_decay, bonus, k)
    v = tensor(v, "v")
    check_ndim(v, "v", 2, "(..., L, D)")
    check_size(v, "v", -2, L, "sequence length L", "`k`")
    check_size(v, "v", -1, D, "channel count D", "`k`")
    k, w, u, v = promote(k, w, u, v)
    batch = batch_shape(k=batch, v=v.shape[:-2])
    num = v.new_zeros(*batch, D)
    den = v.new_zeros(*batch, D)
    y = v.new_zeros(*batch, L, D)
    for t in range(L):
        now = torch.exp(u + k[..., t, :])
        y[..., t, :] = (num + now * v[..., t, :]) / (den + now)
        num = torch.exp(w) * num + torch.exp(k[..., t, :]) * v[..., t, :]
        den = torch.exp(w) * den + torch.exp(k[..., t, :])
    return y
