"""The mLSTM (xLSTM's matrix memory) as one causal operator per head.

Per head, with queries and keys ``q_t, k_t`` (``d`` each), the input-gate
pre-activation ``i_t`` (an exponential gate) and the forget-gate pre-activation
``f_t`` (a sigmoid gate, ``log f = logsigmoid(f_t)``), the mLSTM keeps a matrix
memory and a normalizer vector::

    C_t = f_t C_(t-1) + e^(i_t) k_t v_t^T,    n_t = f_t n_(t-1) + e^(i_t) k_t
    y_t = C_t^T q~_t / (max(|q~_t . n_t|, 1) + eps e^(m_t)),    q~_t = q_t / sqrt(d)

where ``m_t = max(F_t, max_{j<=t} (F_t - F_j + i_j))`` (``F_t = sum_{s<=t} log f_s``) is
the running maximum the model keeps to stabilize the exponentials (it enters the
output only through ``eps``). With the gates and keys fixed this is linear in ``v``:

    T[t, j] = (q~_t . k_j) e^(F_t - F_j + i_j) / den_t    (j <= t)

``den_t`` depends on ``t`` only, so the normalizer rescales rows: it leaves the rank
of every split block alone but changes its singular values, and is kept exactly as
the model computes it. State: ``d`` per value channel (a gated linear attention
with a scalar gate), so the TSS is ``d``.

Recurrence, in the stabilized scale the model works in (every entry bounded)::

    A_t = e^(log f_t + m_(t-1) - m_t) I,   b_t = e^(i_t - m_t) k_t,
    c_t = q~_t / (max(|q~_t . n~_t|, e^(-m_t)) + eps),   n~_t = e^(-m_t) n_t.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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

__all__ = ["mlstm", "mlstm_ref"]


def _check_eps(eps) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"`eps` must be a number, got {type(eps).__name__}.") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`eps` must be finite and >= 0, got {eps!r} (xLSTM uses 1e-6).")
    return value


def _check_mlstm(q, k, igate, fgate):
    q, k = tensor(q, "q"), tensor(k, "k")
    check_ndim(q, "q", 2, "(..., L, d)")
    check_ndim(k, "k", 2, "(..., L, d)")
    L = check_length_of(q, "q", -2)
    check_size(k, "k", -2, L, "sequence length L", "`q`")
    check_size(k, "k", -1, q.shape[-1], "key dimension d", "`q`")
    i, f = tensor(igate, "igate"), tensor(fgate, "fgate")
    check_ndim(i, "igate", 1, "(..., L)")
    check_ndim(f, "fgate", 1, "(..., L)")
    check_size(i, "igate", -1, L, "sequence length L", "`q`")
    check_size(f, "fgate", -1, L, "sequence length L", "`q`")
    q, k, i, f = promote(q, k, i, f)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2], igate=i.shape[:-1], fgate=f.shape[:-1])
    return q, k, i, f, batch, L


def _stabilizer(i: torch.Tensor, log_f: torch.Tensor) -> torch.Tensor:
    """The running maximum ``m_t = max(log f_t + m_(t-1), i_t)``, ``m_(-1) = 0``, ``(..., L)``.

    Equal to ``max(F_t, max_{j<=t} (F_t - F_j + i_j))``: the largest log-weight of
    any input so far, the zero initial state counting with ``F_t``.
    """
    m = torch.empty_like(i)
    prev = torch.zeros_like(i[..., 0])
    for t in range(i.shape[-1]):
        prev = torch.maximum(log_f[..., t] + prev, i[..., t])
        m[..., t] = prev
    return m


def mlstm(q, k, igate, fgate, *, eps=1e-6) -> CausalOperator:
    """The mLSTM with its normalizer, one causal operator per head.

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d)
        Queries and keys (unscaled: the ``1 / sqrt(d)`` is applied here).
    igate : torch.Tensor or numpy.ndarray, shape (..., L)
        Input-gate pre-activations (the gate is ``exp(igate)``).
    fgate : torch.Tensor or numpy.ndarray, shape (..., L)
        Forget-gate pre-activations (the gate is ``sigmoid(fgate)``).
    eps : float, default 1e-6
        The normalizer's epsilon (xLSTM's ``config.eps``).

    Returns
    -------
    CausalOperator
        ``kind="mlstm"``; ``dense()`` is ``(..., L, L)``; recurrence (module
        docstring) ``a`` ``(..., L, d)`` (a scalar per step, broadcast), ``b`` and
        ``c`` ``(..., L, d)``; ``tss = d``.
    """
    q, k, i, f, batch, L = _check_mlstm(q, k, igate, fgate)
    eps = _check_eps(eps)
    d = q.shape[-1]
    q = q.expand(*batch, L, d) * d**-0.5
    k = k.expand(*batch, L, d)
    i = i.expand(*batch, L)
    log_f = F.logsigmoid(f.expand(*batch, L))
    m = _stabilizer(i, log_f)
    m_prev = torch.cat([torch.zeros_like(m[..., :1]), m[..., :-1]], dim=-1)  # m_(-1) = 0
    decay = torch.exp(log_f + m_prev - m)  # <= 1: m_t >= log f_t + m_(t-1)
    b = torch.exp(i - m)[..., None] * k  # e^(i_t - m_t) k_t, i_t <= m_t
    # n~_t = decay_t n~_(t-1) + b_t, one step at a time: no (L, L) weights.
    n = torch.empty_like(k)
    state = torch.zeros_like(k[..., 0, :])
    for t in range(L):
        state = decay[..., t, None] * state + b[..., t, :]
        n[..., t, :] = state
    den = torch.maximum((q * n).sum(-1).abs(), torch.exp(-m)) + eps  # (..., L)

    def dense() -> torch.Tensor:
        cum = torch.cumsum(log_f, dim=-1)  # F_t
        log_w = cum[..., :, None] - cum[..., None, :] + i[..., None, :] - m[..., :, None]
        lower = torch.tril(torch.ones(L, L, dtype=torch.bool, device=q.device))
        weights = torch.exp(log_w.masked_fill(~lower, -torch.inf))  # stabilized, <= 1
        return (q @ k.mT) * weights / den[..., None]

    a = decay[..., None].expand(*batch, L, d)
    c = q / den[..., None]
    return CausalOperator(
        kind="mlstm",
        transition="diagonal",
        length=L,
        tss=full_tss(L, d, q.device),
        recurrence=(a, b, c),
        dense_fn=dense,
    )


def mlstm_ref(q, k, v, igate, fgate, *, eps=1e-6) -> torch.Tensor:
    """The mLSTM by its stabilized recurrence, one step at a time (xLSTM's step).

    Parameters
    ----------
    q, k, igate, fgate, eps : as in ``mlstm``.
    v : torch.Tensor or numpy.ndarray, shape (..., L, d_v)

    Returns
    -------
    torch.Tensor, shape (..., L, d_v)
        With ``m_t = max(log f_t + m_(t-1), i_t)`` (``m_(-1) = 0``), the stabilized
        memory ``C_t = e^(log f_t + m_(t-1) - m_t) C_(t-1) + e^(i_t - m_t) k_t v_t^T``
        (``n_t`` likewise) and ``y_t = C_t^T q~_t / (max(|q~_t . n_t|, e^(-m_t)) + eps)``.
    """
    q, k, i, f, batch, L = _check_mlstm(q, k, igate, fgate)
    eps = _check_eps(eps)
    v = tensor(v, "v")
    check_ndim(v, "v", 2, "(..., L, d_v)")
    check_size(v, "v", -2, L, "sequence length L", "`q`")
    q, k, v, i, f = promote(q, k, v, i, f)
    batch = batch_shape(q=batch, v=v.shape[:-2])
    d, d_v = q.shape[-1], v.shape[-1]
    C = q.new_zeros(*batch, d, d_v)
    n = q.new_zeros(*batch, d)
    m = q.new_zeros(*batch)
    y = q.new_zeros(*batch, L, d_v)
    for t in range(L):
        log_f = F.logsigmoid(f[..., t])
        m_new = torch.maximum(log_f + m, i[..., t])
        decay = torch.exp(log_f + m - m_new)
        gain = torch.exp(i[..., t] - m_new)
        C = (
            decay[..., None, None] * C
            + gain[..., None, None] * k[..., t, :, None] * v[..., t, None, :]
        )
        n = decay[..., None] * n + gain[..., None] * k[..., t, :]
        m = m_new
        q_t = q[..., t, :] * d**-0.5
        num = (q_t[..., None, :] @ C).squeeze(-2)
        den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m)) + eps
        y[..., t, :] = num / den[..., None]
    return y
