"""The gated delta rule (Gated DeltaNet, Kimi Delta Attention) as causal operators.

Per head the state is a ``d_k x d_v`` matrix. At every step it decays, the value
stored under the key ``k_t`` is partly erased, and ``v_t`` is written there::

    S'_t = diag(alpha_t) S_(t-1)                       # decay (per key row)
    S_t  = S'_t + beta_t k_t (v_t - S'_t^T k_t)^T      # delta-rule write
    y_t  = S_t^T (scale * q_t)                         # read after the write

Gated DeltaNet (Qwen3-Next, OLMo Hybrid) has one decay ``alpha_t`` per step and
head; Kimi Delta Attention (Kimi Linear, Ling) one per step, head and key channel.
Column ``v`` of ``S`` only ever meets column ``v`` of ``v_t``, so each value channel
follows the same recurrence ``x_t = A_t x_(t-1) + b_t u_t, y_t = c_t . x_t`` with

    A_t = (I - beta_t k_t k_t^T) diag(alpha_t),   b_t = beta_t k_t,   c_t = scale * q_t

(state size ``N = d_k``). None of ``A_t, b_t, c_t`` depends on the value channel: all
``d_v`` channels of a head share one operator ``T``, as in linear attention.

The models L2-normalise ``q`` and ``k`` and use ``scale = d_k ** -0.5``; pass ``q`` and
``k`` after the normalisation. With ``||k_t|| <= 1`` and ``beta_t`` in ``[0, 2]`` (OLMo
Hybrid doubles a sigmoid to allow negative eigenvalues) ``A_t`` never grows a state.
"""

from __future__ import annotations

import torch

from ..core import DeltaTransition
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

__all__ = ["gated_delta_rule", "gated_delta_rule_ref"]

BETA_MAX = 2.0  # OLMo Hybrid: beta = 2 sigmoid(.), eigenvalue 1 - beta of A_t down to -1


def _check(q, k, beta, decay, scale):
    q, k = tensor(q, "q"), tensor(k, "k")
    check_ndim(q, "q", 2, "(..., L, d_k)")
    check_ndim(k, "k", 2, "(..., L, d_k)")
    L = check_length_of(q, "q", -2)
    d_k = q.shape[-1]
    check_size(k, "k", -2, L, "sequence length L", "`q`")
    check_size(k, "k", -1, d_k, "key dimension d_k", "`q`")
    beta = tensor(beta, "beta")
    check_ndim(beta, "beta", 1, "(..., L)")
    check_size(beta, "beta", -1, L, "sequence length L", "`q`")
    bad = (beta < 0) | (beta > BETA_MAX)
    if bool(bad.any()):
        raise ValueError(
            f"`beta` must lie in [0, {BETA_MAX:g}] (the delta rule's write strength), got "
            f"{int(bad.sum())} entries outside it (min {float(beta.min()):.3g}, max "
            f"{float(beta.max()):.3g}). Pass beta after its activation, e.g. "
            "torch.sigmoid(b) (or 2 * torch.sigmoid(b) with negative eigenvalues)."
        )
    decay = tensor(decay, "decay")
    if decay.ndim == q.ndim:  # (..., L, d_k): one decay per key channel (KDA)
        check_size(decay, "decay", -2, L, "sequence length L", "`q`")
        check_size(decay, "decay", -1, d_k, "key dimension d_k", "`q`")
        decay_batch = decay.shape[:-2]
    elif decay.ndim == q.ndim - 1:  # (..., L): one decay per step (Gated DeltaNet)
        check_size(decay, "decay", -1, L, "sequence length L", "`q`")
        decay_batch = decay.shape[:-1]
    else:
        raise ValueError(
            f"`decay` must have shape (..., L) (one decay per step) or (..., L, d_k) (one "
            f"per key channel), with the leading dimensions of `q` {tuple(q.shape)}; got "
            f"shape {tuple(decay.shape)}. Use size-1 dimensions for shared decays."
        )
    bad = (decay < 0) | (decay > 1)
    if bool(bad.any()):  # 0 is allowed: exp(g) of a very negative g, a full reset
        raise ValueError(
            f"`decay` must lie in [0, 1], got {int(bad.sum())} entries outside it (min "
            f"{float(decay.min()):.3g}, max {float(decay.max()):.3g}). Pass the decay "
            "factor exp(g), not the log-decay g the models compute."
        )
    if scale is None:
        scale = d_k**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(
            f"`scale` must be a number > 0 (None: d_k ** -0.5 as the models use), got {scale!r}."
        )
    q, k, beta, decay = promote(q, k, beta, decay)
    batch = batch_shape(q=q.shape[:-2], k=k.shape[:-2], beta=beta.shape[:-1], decay=decay_batch)
    return q, k, beta, decay, float(scale), batch, L, d_k


def _decay_rows(decay: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``decay`` as ``(..., L, d_k)`` or ``(..., L, 1)`` (scalar per step)."""
    return decay if decay.ndim == q.ndim else decay[..., None]


def gated_delta_rule(q, k, beta, decay, *, scale=None) -> CausalOperator:
    """The gated delta rule, one causal operator per head (shared by its value channels).

    ``T[i, j] = c_i^T A_i A_(i-1) ... A_(j+1) b_j`` for ``j <= i``, with
    ``A_t = (I - beta_t k_t k_t^T) diag(decay_t)``, ``b_t = beta_t k_t`` and
    ``c_t = scale * q_t`` (see the module docstring for the state-matrix form).

    Parameters
    ----------
    q, k : torch.Tensor or numpy.ndarray, shape (..., L, d_k)
        Queries and keys as the recurrence uses them: L2-normalised in the models,
        repeated from the key heads to the value heads where there are fewer.
    beta : torch.Tensor or numpy.ndarray, shape (..., L)
        Write strengths in ``[0, 2]`` (``sigmoid``, or ``2 * sigmoid`` in OLMo Hybrid).
    decay : torch.Tensor or numpy.ndarray, shape (..., L) or (..., L, d_k)
        Decay factors in ``[0, 1]``: one per step (Gated DeltaNet, ``exp(g)``) or one
        per step and key channel (Kimi Delta Attention). ``decay_0`` acts on the empty
        state and never matters.
    scale : float, optional
        Query scale, ``d_k ** -0.5`` by default (as in the models).

    Returns
    -------
    CausalOperator
        ``kind="gated_delta_rule"`` (scalar decay) or ``"kimi_delta_attention"``
        (per-channel decay); ``dense()`` ``(..., L, L)``, computed in float64 by
        running the state on impulses (no ``N x N`` matrix); ``recurrence`` is
        ``(A, b, c)`` with ``A`` a ``DeltaTransition`` and ``b``, ``c`` of shape
        ``(..., L, d_k)``; ``tss = d_k``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> L, d_k = 8, 3
    >>> q, k = torch.nn.functional.normalize(torch.randn(2, L, d_k, generator=g), dim=-1)
    >>> beta, decay = torch.rand(2, L, generator=g)
    >>> op = gated_delta_rule(q, k, beta, 0.5 + decay / 2)
    >>> op.kind, op.dense().shape, int(op.tss[0])
    ('gated_delta_rule', torch.Size([8, 8]), 3)
    """
    q, k, beta, decay, scale, batch, L, d_k = _check(q, k, beta, decay, scale)
    per_channel = decay.ndim == q.ndim
    shape = (*batch, L, d_k)
    b = (beta[..., None] * k).expand(shape)
    c = (scale * q).expand(shape)
    decay_shape = shape if per_channel else shape[:-1]
    # applied in its diagonal-plus-rank-one form by the core, never as (L, N, N)
    a = DeltaTransition(decay.expand(decay_shape), beta.expand(shape[:-1]), k.expand(shape))

    def dense() -> torch.Tensor:
        return _impulse_dense(q, k, beta, decay, scale)

    return CausalOperator(
        kind="kimi_delta_attention" if per_channel else "gated_delta_rule",
        length=L,
        tss=full_tss(L, d_k, q.device),
        recurrence=(a, b, c),
        dense_fn=dense,
    )


def _impulse_dense(q, k, beta, decay, scale) -> torch.Tensor:
    """``T`` in float64: column ``j`` is the state an impulse at ``j`` leaves, read by q.

    Each step applies ``A_t`` as a decay and a rank-one correction to all columns at
    once, O(L^2 d_k) per head; no ``(L, d_k, d_k)`` tensor is formed.
    """
    f64 = torch.float64
    q, k, beta = (scale * q).to(f64), k.to(f64), beta.to(f64)
    alpha = _decay_rows(decay, q).to(f64)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], beta.shape[:-1], alpha.shape[:-2])
    L, d_k = q.shape[-2:]
    q, k = q.expand(*batch, L, d_k), k.expand(*batch, L, d_k)
    beta = beta.expand(*batch, L)
    alpha = alpha.expand(*batch, L, alpha.shape[-1])
    T = q.new_zeros(*batch, L, L)
    x = q.new_zeros(*batch, d_k, L)  # column j: the state left by an impulse at step j
    for t in range(L):
        kt = k[..., t, :, None]  # (..., d_k, 1)
        x = alpha[..., t, :, None] * x
        x = x - beta[..., t, None, None] * kt * (kt.mT @ x)
        x[..., t] = beta[..., t, None] * k[..., t, :]
        T[..., t, :] = (q[..., t, None, :] @ x).squeeze(-2)
    return T


def gated_delta_rule_ref(q, k, v, beta, decay, *, scale=None) -> torch.Tensor:
    """The gated delta rule by its state-matrix recurrence, one step at a time.

    As the models' recurrent form writes it (``S_(-1) = 0``)::

        S = decay_t * S                              # rows scaled (per key channel)
        S = S + beta_t k_t (v_t - S^T k_t)^T
        y_t = S^T (scale * q_t)

    Parameters
    ----------
    q, k, beta, decay, scale : as in ``gated_delta_rule``.
    v : torch.Tensor or numpy.ndarray, shape (..., L, d_v)
        Values.

    Returns
    -------
    torch.Tensor, shape (..., L, d_v)
    """
    q, k, beta, decay, scale, batch, L, d_k = _check(q, k, beta, decay, scale)
    v = tensor(v, "v")
    check_ndim(v, "v", 2, "(..., L, d_v)")
    check_size(v, "v", -2, L, "sequence length L", "`q`")
    q, k, beta, decay, v = promote(q, k, beta, decay, v)
    batch = batch_shape(qk=batch, v=v.shape[:-2])
    alpha = _decay_rows(decay, q)
    d_v = v.shape[-1]
    S = q.new_zeros(*batch, d_k, d_v)
    y = q.new_zeros(*batch, L, d_v)
    for t in range(L):
        S = alpha[..., t, :, None] * S
        kt = k[..., t, :]
        stored = (kt[..., None, :] @ S).squeeze(-2)  # S^T k_t, (..., d_v)
        delta = beta[..., t, None] * (v[..., t, :] - stored)
        S = S + kt[..., :, None] * delta[..., None, :]
        y[..., t, :] = scale * (q[..., t, None, :] @ S).squeeze(-2)
    return y
