"""Linear time-invariant (LTI) state-space systems as causal operators.

The discrete system (single input, single output, ``x_0 = 0``)::

    x_(k+1) = A x_k + B u_k,    y_k = C x_k + D u_k

has the Toeplitz operator ``T[i, j] = C A^(i-j-1) B`` below the diagonal and ``D`` on
it. Its split blocks are Hankel matrices of rank at most ``n`` (exactly ``n`` for a
minimal system once ``min(i, L - i) >= n``): the textbook case where ESS equals the
minimal state size.

The core's recurrence ``x_t = A_t x_(t-1) + b_t u_t, y_t = c_t . x_t`` lets ``u_t``
reach ``y_t`` at once, while here ``u_k`` first reaches ``y_(k+1)``. The augmented
state ``z_t = (x_t, u_t)`` bridges the two without inverting ``A``:

    A_aug = [[A, B], [0, 0]],   b = e_(n+1),   c = (C, D)

(state size ``n + 1``; the extra direction only carries ``D u_t`` to the diagonal,
which never enters ESS).
"""

from __future__ import annotations

import math

import torch

from ._common import (
    batch_shape,
    check_length,
    check_ndim,
    full_tss,
    promote,
    tensor,
    tensor_like,
    toeplitz,
)
from .base import CausalOperator

__all__ = ["lti", "lti_simulate", "random_lti"]


def _check_system(A, B, C, D):
    A = tensor(A, "A")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"`A` must be square, shape (..., n, n), got shape {tuple(A.shape)}. Pass the "
            "state matrix of the discrete system."
        )
    n = A.shape[-1]
    if n < 1:
        raise ValueError(f"`A` must have a state of size n >= 1, got shape {tuple(A.shape)}.")
    B, C, D = tensor(B, "B"), tensor(C, "C"), tensor_like(D, "D", A)
    if B.ndim >= 2 and tuple(B.shape[-2:]) == (n, 1):
        B = B[..., 0]  # a column (n, 1): single input
    if C.ndim >= 2 and tuple(C.shape[-2:]) == (1, n):
        C = C[..., 0, :]  # a row (1, n): single output
    for t, name, layout in ((B, "B", "(n,) or (n, 1)"), (C, "C", "(n,) or (1, n)")):
        check_ndim(t, name, 1, f"(..., n) = {layout}")
        if t.shape[-1] != n:
            raise ValueError(
                f"`{name}` must have shape {layout} with n = {n} to match `A` "
                f"{tuple(A.shape)}, got shape {tuple(t.shape)}. Only single-input, "
                "single-output systems are supported: take one column of B / row of C."
            )
    A, B, C, D = promote(A, B, C, D)
    batch = batch_shape(A=A.shape[:-2], B=B.shape[:-1], C=C.shape[:-1], D=D.shape)
    return A, B, C, D, batch, n


def lti(A, B, C, L, *, D=0.0) -> CausalOperator:
    """An LTI state-space system as a causal Toeplitz operator of length ``L``.

    ``T[i, j] = C A^(i-j-1) B`` for ``i > j``, ``D`` on the diagonal, zero above.

    Parameters
    ----------
    A : torch.Tensor or numpy.ndarray, shape (..., n, n)
        State matrix.
    B : torch.Tensor or numpy.ndarray, shape (..., n) or (..., n, 1)
        Input vector.
    C : torch.Tensor or numpy.ndarray, shape (..., n) or (..., 1, n)
        Output vector.
    L : int
        Sequence length, >= 2.
    D : float or torch.Tensor, default 0.0
        Feed-through (scalar or one per leading index); it sits on the diagonal and
        never enters ESS.

    Returns
    -------
    CausalOperator
        ``kind="lti"``; ``dense()`` is ``(..., L, L)``; recurrence ``(A_aug, e_(n+1),
        (C, D))`` with ``a`` of shape ``(..., L, n+1, n+1)`` (dense) and ``b, c`` of
        shape ``(..., L, n+1)``, exact (see the module notes); ``tss = n``.
        ``spectra()`` then holds ``min(n + 1, L // 2)`` values per split; past the
        ``n``-th they are rounding noise (about 1e-16 ``sigma_1``), so count them with
        a tolerance, not ``tol=0``.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[0.5]], dtype=torch.float64)
    >>> B = C = torch.ones(1, dtype=torch.float64)
    >>> lti(A, B, C, 4).dense()
    tensor([[0.0000, 0.0000, 0.0000, 0.0000],
            [1.0000, 0.0000, 0.0000, 0.0000],
            [0.5000, 1.0000, 0.0000, 0.0000],
            [0.2500, 0.5000, 1.0000, 0.0000]], dtype=torch.float64)
    """
    A, B, C, D, batch, n = _check_system(A, B, C, D)
    L = check_length(L)
    aug = A.new_zeros(*batch, n + 1, n + 1)
    aug[..., :n, :n] = A
    aug[..., :n, n] = B
    e = A.new_zeros(n + 1)
    e[n] = 1.0
    c = torch.cat([C.expand(*batch, n), D.expand(batch)[..., None]], dim=-1)
    recurrence = (
        aug[..., None, :, :].expand(*batch, L, n + 1, n + 1),
        e.expand(*batch, L, n + 1),
        c[..., None, :].expand(*batch, L, n + 1),
    )

    def dense() -> torch.Tensor:
        # Markov parameters h_0 = D, h_m = C A^(m-1) B, then the Toeplitz matrix.
        x = B.expand(*batch, n)
        h = [D.expand(batch)]
        for _ in range(1, L):
            h.append((C * x).sum(-1))
            x = (A @ x[..., None])[..., 0]
        return toeplitz(torch.stack(h, dim=-1), L)

    return CausalOperator(
        kind="lti",
        length=L,
        tss=full_tss(L, n, A.device),
        recurrence=recurrence,
        transition="dense",
        dense_fn=dense,
    )


def lti_simulate(A, B, C, u, *, D=0.0) -> torch.Tensor:
    """Run an LTI system on an input sequence, one step at a time (reference for ``lti``).

    ``x_(k+1) = A x_k + B u_k``, ``y_k = C x_k + D u_k``, ``x_0 = 0``.

    Parameters
    ----------
    A, B, C, D : as in ``lti``.
    u : torch.Tensor or numpy.ndarray, shape (..., L)
        Scalar input per step; leading dimensions broadcast with the system's.

    Returns
    -------
    torch.Tensor, shape (..., L)
    """
    A, B, C, D, batch, n = _check_system(A, B, C, D)
    u = tensor(u, "u")
    check_ndim(u, "u", 1, "(..., L)")
    u, A, B, C, D = promote(u, A, B, C, D)
    batch = batch_shape(system=batch, u=u.shape[:-1])
    L = u.shape[-1]
    x = u.new_zeros(*batch, n)
    y = u.new_zeros(*batch, L)
    for k in range(L):
        y[..., k] = (C * x).sum(-1) + D * u[..., k]
        x = (A @ x[..., None])[..., 0] + B * u[..., k, None]
    return y


def random_lti(n, *, seed=None, dtype=torch.float64, stable=True):
    """A generic random single-input, single-output system ``(A, B, C)``.

    Gaussian entries, so the system is minimal (reachable and observable) with
    probability 1: its split blocks have rank ``min(n, i, L - i)``. With
    ``stable=True`` ``A`` is scaled to spectral radius 0.9.

    Parameters
    ----------
    n : int
        State size, >= 1.
    seed : int, optional
        Seed of a private generator (the global torch RNG is left alone).
    dtype : torch.dtype, default torch.float64
    stable : bool, default True

    Returns
    -------
    A : torch.Tensor, shape (n, n)
    B : torch.Tensor, shape (n,)
    C : torch.Tensor, shape (n,)

    Examples
    --------
    >>> A, B, C = random_lti(3, seed=0)
    >>> float(torch.linalg.eigvals(A).abs().max())
    0.9
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1 (the state size), got {n!r}.")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"`dtype` must be a floating torch dtype, got {dtype!r}.")
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    if stable:
        A = A * (0.9 / torch.linalg.eigvals(A).abs().max())
    B = torch.randn(n, generator=g, dtype=torch.float64)
    C = torch.randn(n, generator=g, dtype=torch.float64)
    return A.to(dtype), B.to(dtype), C.to(dtype)
