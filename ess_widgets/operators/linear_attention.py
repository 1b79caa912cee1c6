"""Linear attention and its decayed / gated variants as causal operators.

All three keep a matrix state ``S_t = diag(a_t) S_(t-1) + k_t v_t^T`` (``d_k x d_v``)
and read ``y_t = S_t^T q_t``. Each value channel sees the same operator

    T[i, j] = q_i . (a_(j+1) * ... * a_i * k_j)    (j <= i, elementwise products)

so one ``T`` per head serves all ``d_v`` channels. In the core's recurrence form
``x_t = A_t x_(t-1) + b_t u_t, y_t = c_t . x_t`` (one value channel) this is
``A_t = diag(a_t)``, ``b_t = k_t``, ``c_t = q_t``: state size ``d_k``.

- linear attention (LA): ``a_t = 1``;
- weighted LA (WLA): ``a_t = lambda``, a fixed decay (scalar or per key dimension);
- gated LA (GLA): ``a_t = alpha_t``, an input-dependent gate.
"""

from __future__ import annotations

import torch

from ._common import (
    batch_shape,
    check_length_of,
    check_ndim,
    check_size,
    check_unit_interval,
    full_tss,
    promote,
    segsum,
    tensor,
    tensor_like,
)
from .base import CausalOperator

__all__ = [
    "linear_attention",
    "weighted_linear_attention",
    "gated_linear_attention",
    "linear_attention_ref",
]


def _check_qk(q, k):
    q, k = promote(tensor(q, "q"), tensor(k, "k"))
    check_ndim(q, "q", 2, "(..., L, d_k)")
    check_ndim(k, "k", 2, "(..., L, d_k)")
    L = check_length_of(q, "q", -2)
    check_size(k, "k", -2, L, "sequence length L", "`q`")
    check_size(k, "k", -1, q.shape[-1], "key dimension d_k", "`q`")
    return q, k, L


def _check_last(t: torch.Tensor, name: str, d_k: int, layout: str) -> None:
    if t.shape[-1] not in (1, d_k):
        raise ValueError(
            f"`{name}` must have shape {layout} with last dimension d_k = {d_k} (one "
            f"value per key dimension) or 1 (shared), got shape {tuple(t.shape)}."
        )


def _decayed_dense(q: torch.Tensor, k: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """``T[i, j] = sum_n q_i[n] k_j[n] exp(sum_{t=j+1..i} log_a_t[n])``, zero above.

    ``log_a`` is ``(..., L, d_k)`` or ``(..., L, 1)``. One ``(..., L, L)`` decay mask
    per key dimension at a time, so the memory stays that of ``T`` itself.
    """
    if log_a.shape[-1] == 1:
        return (q @ k.mT) * torch.exp(segsum(log_a[..., 0]))
    T = None
    for n in range(q.shape[-1]):
        term = q[..., :, n, None] * k[..., None, :, n] * torch.exp(segsum(log_a[..., n]))
        T = term if T is None else T + term
    return T


def _operator(kind, q, k, a, batch, L, dense) -> CausalOperator:
    d_k = q.shape[-1]
    shape = (*batch, L, d_k)
    # expand, not copy: the core flattens (and then copies) what it needs.
    recurrence = (a.expand(shape), k.expand(shape), q.expand(shape))
    return CausalOperator(
        kind=kind,
        length=L,
        tss=full_tss(L, d_k, q.device),
        recurrence=recurrence,
        transition="diagonal",
        dense_fn=dense,
    )


def linear_attention(q, k) -> CausalOperator:
    """Causal linear attention ``T[i, j] = q_i . k_j`` (``j <= i``), one operator per head.

    Parameters
    ----------
    q : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
        Queries (after any feature map, e.g. ``elu(x) + 1``).
    k : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
        Keys; leading dimensions broadcast with those of ``q``.

    Returns
    -------
    CausalOperator
        ``kind="linear_attention"``, ``dense()`` of shape ``(..., L, L)``, recurrence
        ``(a, b, c) = (ones, k, q)`` each ``(..., L, d_k)``, ``tss = d_k``.
        No normalization: divide by ``q_i . sum_j k_j`` yourself if the model does
        (it rescales rows and leaves the rank unchanged).

    Examples
    --------
    >>> import torch
    >>> q = k = torch.ones(1, 4, 1, dtype=torch.float64)  # d_k = 1: a running sum
    >>> op = linear_attention(q, k)
    >>> op.tss
    tensor([1, 1, 1])
    >>> op.tolerance_ess(1e-8, relative=True)
    tensor([[1, 1, 1]])
    """
    q, k, L = _check_qk(q, k)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2])

    def dense() -> torch.Tensor:
        return torch.tril(q @ k.mT)

    return _operator("linear_attention", q, k, q.new_ones(()), batch, L, dense)


def weighted_linear_attention(q, k, decay) -> CausalOperator:
    """Linear attention with a fixed decay: ``T[i, j] = q_i . (decay^(i-j) * k_j)``.

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
    decay : float or torch.Tensor, shape () or (d_k,) or (..., d_k)
        The decay ``lambda`` in (0, 1]: one for all key dimensions, one per key
        dimension, or one per head (leading dimensions as those of ``q`` without
        ``L``). A decay that varies over time is a gate: use
        ``gated_linear_attention``.

    Returns
    -------
    CausalOperator
        ``kind="weighted_linear_attention"``, recurrence ``(decay, k, q)`` with the
        decay broadcast to ``(..., L, d_k)``, ``tss = d_k``.
    """
    q, k, L = _check_qk(q, k)
    d_k = q.shape[-1]
    lam = tensor_like(decay, "decay", q)
    if lam.ndim == 0:
        lam = lam.reshape(1)
    _check_last(lam, "decay", d_k, "() or (d_k,) or (..., d_k)")
    check_unit_interval(lam, "decay", "Pass a decay factor such as 0.9, not its logarithm.")
    q, k, lam = promote(q, k, lam)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2], decay=lam.shape[:-1])
    a = lam[..., None, :]  # (..., 1, d_k|1): the same decay at every step

    def dense() -> torch.Tensor:
        return _decayed_dense(q, k, torch.log(a).expand(*a.shape[:-2], L, a.shape[-1]))

    return _operator(
        "weighted_linear_attention", q, k, a.expand(*a.shape[:-2], L, d_k), batch, L, dense
    )


def gated_linear_attention(q, k, gate) -> CausalOperator:
    """Gated linear attention: ``T[i, j] = q_i . (gate_(j+1) * ... * gate_i * k_j)``.

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
    gate : torch.Tensor or numpy.ndarray, shape (..., L, d_k) or (..., L, 1)
        The forget gates ``alpha_t`` in (0, 1] (e.g. ``sigmoid(x) ** (1 / 16)`` in
        GLA, or ``exp(log_gate)``); last dimension 1 for a scalar gate per step.
        ``gate_0`` acts on the empty state and never matters.

    Returns
    -------
    CausalOperator
        ``kind="gated_linear_attention"``, recurrence ``(gate, k, q)`` each
        ``(..., L, d_k)``, ``tss = d_k``.
    """
    q, k, L = _check_qk(q, k)
    d_k = q.shape[-1]
    g = tensor(gate, "gate")
    check_ndim(g, "gate", 2, "(..., L, d_k)")
    check_size(g, "gate", -2, L, "sequence length L", "`q`")
    _check_last(g, "gate", d_k, "(..., L, d_k)")
    check_unit_interval(
        g,
        "gate",
        "Pass the gate itself (e.g. torch.sigmoid(x) or exp(logsigmoid(x))), "
        "not its logit or logarithm.",
    )
    q, k, g = promote(q, k, g)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2], gate=g.shape[:-2])

    def dense() -> torch.Tensor:
        return _decayed_dense(q, k, torch.log(g))

    return _operator(
        "gated_linear_attention", q, k, g.expand(*g.shape[:-2], L, d_k), batch, L, dense
    )


def linear_attention_ref(q, k, v, a=None) -> torch.Tensor:
    """(Decayed / gated) linear attention by its recurrence, one step at a time.

    Reference for the three builders: ``S_t = diag(a_t) S_(t-1) + k_t v_t^T`` with
    ``S_(-1) = 0``, and ``y_t = S_t^T q_t``.

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
    v : torch.Tensor or numpy.ndarray, shape (..., L, d_v)
    a : float or torch.Tensor, optional
        Per-step state decay, broadcastable to ``(..., L, d_k)``: None (or 1) for
        linear attention, a scalar or ``(d_k,)`` decay for WLA (a per-head decay
        ``(..., d_k)`` must be given as ``(..., 1, d_k)``), the gates for GLA.

    Returns
    -------
    torch.Tensor, shape (..., L, d_v)
    """
    q, k, L = _check_qk(q, k)
    v = tensor(v, "v")
    check_ndim(v, "v", 2, "(..., L, d_v)")
    check_size(v, "v", -2, L, "sequence length L", "`q`")
    q, k, v = promote(q, k, v)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2], v=v.shape[:-2])
    d_k, d_v = q.shape[-1], v.shape[-1]
    if a is not None:
        q, k, v, a = promote(q, k, v, tensor_like(a, "a", q))
        try:
            a = torch.broadcast_to(a, (*batch, L, d_k))
        except RuntimeError:
            raise ValueError(
                f"`a` must broadcast to (..., L, d_k) = {(*batch, L, d_k)}, got shape "
                f"{tuple(a.shape)}. Give a per-head decay as (..., 1, d_k)."
            ) from None
    S = q.new_zeros(*batch, d_k, d_v)
    y = q.new_zeros(*batch, L, d_v)
    for t in range(L):
        if a is not None:
            S = a[..., t, :, None] * S
        S = S + k[..., t, :, None] * v[..., t, None, :]
        y[..., t, :] = (q[..., t, None, :] @ S).squeeze(-2)
    return y
