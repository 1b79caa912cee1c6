"""Selective state-space models (S6 / Mamba, SSD / Mamba2) as causal operators.

Both discretize ``h' = A h + B u`` with an input-dependent step ``dt`` (zero-order
hold on ``A``, Euler on ``B``, as in mamba's ``selective_scan_ref``)::

    h_t = exp(dt_t A) h_(t-1) + dt_t B_t u_t,    y_t = C_t . h_t

so, per channel, ``T[i, j] = C_i . exp(A sum_{t=j+1..i} dt_t) dt_j B_j`` (``j <= i``).
S6 has a diagonal ``A`` per channel (``(D, N)``) and one step per channel; SSD has
one scalar ``A_h`` and one step per head. The skip ``D u`` and the output gate are
left out: the skip sits on the diagonal, which never enters ESS, and the gate
rescales rows.
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

__all__ = ["selective_ssm", "ssd", "selective_scan_ref", "ssd_ref"]


def _check_dt(dt) -> torch.Tensor:
    dt = tensor(dt, "dt")
    check_ndim(dt, "dt", 2, "(..., L, D)")
    check_length_of(dt, "dt", -2)
    if bool((dt < 0).any()):
        raise ValueError(
            f"`dt` must be >= 0 (a step size), got {int((dt < 0).sum())} negative entries "
            f"(min {float(dt.min()):.3g}). Pass the step after its activation, e.g. "
            "torch.nn.functional.softplus(dt + dt_bias)."
        )
    return dt


def _check_A_sign(A: torch.Tensor) -> None:
    if bool((A > 0).any()):
        raise ValueError(
            f"`A` must be <= 0 (a decaying state), got {int((A > 0).sum())} positive "
            f"entries (max {float(A.max()):.3g}). Mamba stores A_log: pass "
            "A = -torch.exp(A_log)."
        )


def _check_BC(B, C, L: int, N: int | None, layout: str):
    B, C = tensor(B, "B"), tensor(C, "C")
    for t, name in ((B, "B"), (C, "C")):
        check_ndim(t, name, 2, layout)
    check_size(B, "B", -2, L, "sequence length L", "`dt`")
    check_size(C, "C", -2, L, "sequence length L", "`dt`")
    if N is not None:
        check_size(B, "B", -1, N, "state size N", "`A` (its last dimension)")
    check_size(C, "C", -1, B.shape[-1], "state size N", "`B`")
    return B, C


def _check_selective(dt, A, B, C):
    dt = _check_dt(dt)
    L, D = dt.shape[-2:]
    A = tensor(A, "A")
    if A.ndim != 2:
        raise ValueError(
            f"`A` must have shape (D, N) (one diagonal state matrix per channel), got "
            f"shape {tuple(A.shape)}. For a single channel use A[None]."
        )
    _check_A_sign(A)
    check_size(A, "A", 0, D, "channel count D", "`dt` (its last dimension)")
    N = A.shape[1]
    B, C = _check_BC(B, C, L, N, "(..., L, N)")
    dt, A, B, C = promote(dt, A, B, C)
    batch = batch_shape(dt=dt.shape[:-2], B=B.shape[:-2], C=C.shape[:-2])
    return dt, A, B, C, batch, L, D, N


def selective_ssm(dt, A, B, C) -> CausalOperator:
    """The S6 / Mamba selective scan as one causal operator per channel.

    ``T_c[i, j] = sum_n C_i[n] exp(A[c, n] sum_{t=j+1..i} dt_t[c]) dt_j[c] B_j[n]``.

    Parameters
    ----------
    dt : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Step sizes after softplus (>= 0), one per channel ``c``.
    A : torch.Tensor or numpy.ndarray, shape (D, N)
        Diagonal state matrices, <= 0 (Mamba: ``-torch.exp(A_log)``).
    B, C : torch.Tensor or numpy.ndarray, shape (..., L, N)
        Input and output projections, shared by the channels.

    Returns
    -------
    CausalOperator
        ``kind="selective_ssm"``; ``dense()`` is ``(..., D, L, L)`` (one operator per
        channel); recurrence ``a = exp(dt A)``, ``b = dt B``, ``c = C``, each
        ``(..., D, L, N)``; ``tss = N``. The dense form is built in closed form from
        segment sums of ``dt`` (no recurrence run).

    Examples
    --------
    >>> import torch
    >>> L, D, N = 6, 2, 3
    >>> g = torch.Generator().manual_seed(0)
    >>> dt = torch.rand(L, D, generator=g, dtype=torch.float64)
    >>> A = -torch.rand(D, N, generator=g, dtype=torch.float64)
    >>> B, C = torch.randn(2, L, N, generator=g, dtype=torch.float64)
    >>> op = selective_ssm(dt, A, B, C)
    >>> op.dense().shape, op.recurrence[0].shape
    (torch.Size([2, 6, 6]), torch.Size([2, 6, 3]))
    """
    dt, A, B, C, batch, L, D, N = _check_selective(dt, A, B, C)
    dt_c = dt.mT  # (..., D, L)
    shape = (*batch, D, L, N)
    a = torch.exp(dt_c[..., :, :, None] * A[:, None, :])
    b = dt_c[..., :, :, None] * B[..., None, :, :]
    c = C[..., None, :, :]

    def dense() -> torch.Tensor:
        # One state dimension at a time: a (..., D, L, L) decay mask, not (..., D, N, L, L).
        T = None
        for n in range(N):
            decay = torch.exp(segsum(dt_c * A[:, n, None]))  # (..., D, L, L)
            term = C[..., None, :, None, n] * B[..., None, None, :, n] * decay
            T = term if T is None else T + term
        return T * dt_c[..., None, :]  # dt_j scales column j

    return CausalOperator(
        kind="selective_ssm",
        length=L,
        tss=full_tss(L, N, dt.device),
        recurrence=(a.expand(shape), b.expand(shape), c.expand(shape)),
        transition="diagonal",
        dense_fn=dense,
    )


def _check_ssd(dt, A, B, C):
    dt = _check_dt(dt)
    L, H = dt.shape[-2:]
    A = tensor(A, "A")
    if A.ndim != 1:
        raise ValueError(
            f"`A` must have shape (H,) (one scalar decay per head), got shape "
            f"{tuple(A.shape)}. For S6-style A of shape (D, N) use selective_ssm."
        )
    _check_A_sign(A)
    check_size(A, "A", 0, H, "head count H", "`dt` (its last dimension)")
    B = tensor(B, "B")
    per_head = B.ndim == dt.ndim + 1
    layout = "(..., L, H, N)" if per_head else "(..., L, N)"
    if per_head:
        C = tensor(C, "C")
        if C.ndim != B.ndim:
            raise ValueError(
                f"`C` must have the layout of `B` {layout}, got shape {tuple(C.shape)} "
                f"against `B` {tuple(B.shape)}."
            )
        for t, name in ((B, "B"), (C, "C")):
            check_size(t, name, -3, L, "sequence length L", "`dt`")
            check_size(t, name, -2, H, "head count H", "`dt` (its last dimension)")
        # read the head axis next to the batch: (..., L, H, N) -> (..., H, L, N).
        B, C = B.movedim(-2, -3), C.movedim(-2, -3)
    B, C = _check_BC(B, C, L, None, layout)
    N = B.shape[-1]
    dt, A, B, C = promote(dt, A, B, C)
    if not per_head:
        B, C = B[..., None, :, :], C[..., None, :, :]  # shared by all heads
    batch = batch_shape(dt=dt.shape[:-2], B=B.shape[:-3], C=C.shape[:-3])
    return dt, A, B, C, batch, L, H, N


def ssd(dt, A, B, C) -> CausalOperator:
    """Mamba2's state-space duality (SSD) layer as one causal operator per head.

    ``T_h[i, j] = (C_i . B_j) exp(A_h sum_{t=j+1..i} dt_t[h]) dt_j[h]``.

    Parameters
    ----------
    dt : torch.Tensor or numpy.ndarray, shape (..., L, H)
        Step sizes after softplus (>= 0), one per head.
    A : torch.Tensor or numpy.ndarray, shape (H,)
        Scalar decay rates, <= 0 (Mamba2: ``-torch.exp(A_log)``).
    B, C : torch.Tensor or numpy.ndarray, shape (..., L, N) or (..., L, H, N)
        Input and output projections: shared by all heads (one group), or one per
        head. The per-head layout is recognized by having one more dimension than
        ``dt``; with ``G`` groups, index them per head first, e.g.
        ``B.repeat_interleave(H // G, dim=-2)`` on ``(..., L, G, N)``.

    Returns
    -------
    CausalOperator
        ``kind="ssd"``; ``dense()`` is ``(..., H, L, L)``; recurrence
        ``a = exp(dt_h A_h)`` (broadcast over N), ``b = dt_h B``, ``c = C``, each
        ``(..., H, L, N)``; ``tss = N``.
    """
    dt, A, B, C, batch, L, H, N = _check_ssd(dt, A, B, C)
    log_a = dt.mT * A[:, None]  # (..., H, L)
    dt_h = dt.mT
    shape = (*batch, H, L, N)
    a = torch.exp(log_a)[..., None]
    b = dt_h[..., None] * B

    def dense() -> torch.Tensor:
        return (C @ B.mT) * torch.exp(segsum(log_a)) * dt_h[..., None, :]

    return CausalOperator(
        kind="ssd",
        length=L,
        tss=full_tss(L, N, dt.device),
        recurrence=(a.expand(shape), b.expand(shape), C.expand(shape)),
        transition="diagonal",
        dense_fn=dense,
    )


def selective_scan_ref(u, dt, A, B, C) -> torch.Tensor:
    """The S6 selective scan by its recurrence, one step at a time (no skip, no gate).

    ``h_t = exp(dt_t A) h_(t-1) + dt_t B_t u_t`` (``h`` is ``(D, N)`` per sample,
    ``h_(-1) = 0``), ``y_t = C_t . h_t`` per channel.

    Parameters
    ----------
    u : torch.Tensor or numpy.ndarray, shape (..., L, D)
        Input, one value per channel.
    dt, A, B, C : as in ``selective_ssm``.

    Returns
    -------
    torch.Tensor, shape (..., L, D)
    """
    dt, A, B, C, batch, L, D, N = _check_selective(dt, A, B, C)
    u = tensor(u, "u")
    check_ndim(u, "u", 2, "(..., L, D)")
    check_size(u, "u", -2, L, "sequence length L", "`dt`")
    check_size(u, "u", -1, D, "channel count D", "`dt`")
    u, dt, A, B, C = promote(u, dt, A, B, C)
    batch = batch_shape(dt=batch, u=u.shape[:-2])
    h = u.new_zeros(*batch, D, N)
    y = u.new_zeros(*batch, L, D)
    for t in range(L):
        step = dt[..., t, :, None]  # (..., D, 1)
        h = torch.exp(step * A) * h + step * B[..., t, None, :] * u[..., t, :, None]
        y[..., t, :] = (h * C[..., t, None, :]).sum(-1)
    return y


def ssd_ref(u, dt, A, B, C) -> torch.Tensor:
    """The SSD recurrence, one step at a time, one value channel per head.

    ``h_t = exp(dt_t A_h) h_(t-1) + dt_t B_t u_t`` (``h`` is ``(H, N)`` per sample),
    ``y_t = C_t . h_t`` per head.

    Parameters
    ----------
    u : torch.Tensor or numpy.ndarray, shape (..., L, H)
        Input, one value per head (a head's ``P`` value channels share its operator:
        run them one at a time).
    dt, A, B, C : as in ``ssd``.

    Returns
    -------
    torch.Tensor, shape (..., L, H)
    """
    dt, A, B, C, batch, L, H, N = _check_ssd(dt, A, B, C)
    u = tensor(u, "u")
    check_ndim(u, "u", 2, "(..., L, H)")
    check_size(u, "u", -2, L, "sequence length L", "`dt`")
    check_size(u, "u", -1, H, "head count H", "`dt`")
    u, dt, A, B, C = promote(u, dt, A, B, C)
    batch = batch_shape(dt=batch, u=u.shape[:-2])
    h = u.new_zeros(*batch, H, N)
    y = u.new_zeros(*batch, L, H)
    for t in range(L):
        step = dt[..., t, :, None]  # (..., H, 1)
        # B, C are (..., H, L, N) here (shared ones have a head axis of size 1).
        h = torch.exp(step * A[:, None]) * h + step * B[..., :, t, :] * u[..., t, :, None]
        y[..., t, :] = (h * C[..., :, t, :]).sum(-1)
    return y
