"""Split spectra of a linear recurrence, without forming its L x L operator.

The recurrence (one channel; leading dimensions are batch)::

    x_t = A_t x_(t-1) + b_t u_t,    y_t = c_t . x_t,    x_(-1) = 0

has the causal operator ``T[t, j] = c_t^T A_t ... A_(j+1) b_j`` (``j <= t``).
At a split ``i`` the block factors as ``H_i = T[i:, :i] = O_i R_i`` with

- reachability ``R_i`` (N x i), column j: ``A_(i-1) ... A_(j+1) b_j``, and
- observability ``O_i`` ((L-i) x N), row t: ``c_t^T A_t ... A_i``.

Their Gramians obey ``P_(i+1) = A_i P_i A_i^T + b_i b_i^T`` (with ``P_0 = 0``) and
``Q_i = A_i^T (c_i c_i^T + Q_(i+1)) A_i`` (with ``Q_L = 0``), and
``sigma(H_i)^2 = eig(P_i Q_i)``. We carry square-root factors instead,
``P_i = S_i S_i^T`` and ``Q_i = Z_i^T Z_i`` (N x N, one small QR per step), so that
``sigma(H_i) = svdvals(Z_i S_i)`` keeps small singular values accurate.
Cost O(L N^3) per channel; nothing of size L x L is formed.
"""

from __future__ import annotations

import torch

from ._compute import resolve_device, resolve_dtype, split_workers
from ._validation import as_tensor, check_dense_size, check_finite

__all__ = ["recurrence_spectra", "recurrence_operator"]

# Working memory per chunk of channels (the N x N factors at every split).
_CHUNK_BYTES = 256 * 2**20


def _check_recurrence(a, b, c):
    a, b, c = (as_tensor(x, n) for x, n in ((a, "a"), (b, "b"), (c, "c")))
    for x, n in ((a, "a"), (b, "b"), (c, "c")):
        check_finite(x, n)
    if b.ndim < 2:
        raise ValueError(
            f"`b` must have shape (..., L, N), got shape {tuple(b.shape)}: one input "
            "vector b_t of length N per time step."
        )
    L, N = b.shape[-2:]
    if c.ndim < 2 or tuple(c.shape[-2:]) != (L, N):
        raise ValueError(
            f"`c` must have shape (..., L, N) = (..., {L}, {N}) to match `b`, got shape "
            f"{tuple(c.shape)}."
        )
    if a.ndim < 2:
        raise ValueError(
            f"`a` must have shape (..., L, N) for diagonal A_t or (..., L, N, N) for "
            f"dense A_t, to match `b` {tuple(b.shape)}; got shape {tuple(a.shape)}."
        )
    # Dense when it ends in (L, N, N), unless equal ranks make it a batched diagonal.
    dense_shape = a.ndim >= 3 and tuple(a.shape[-3:]) == (L, N, N)
    diag_shape = tuple(a.shape[-2:]) == (L, N)
    if dense_shape and not (diag_shape and a.ndim == b.ndim):
        diagonal = False
    elif diag_shape:
        diagonal = True
    else:
        kind, expected = ("dense", (L, N, N)) if a.ndim == b.ndim + 1 else ("diagonal", (L, N))
        raise ValueError(
            f"`a` ({kind} A_t) must end in {expected} to match `b` of shape "
            f"{tuple(b.shape)}, got shape {tuple(a.shape)}."
        )
    expected = (L, N) if diagonal else (L, N, N)
    if L < 2:
        raise ValueError(f"The recurrence needs L >= 2 time steps to have a split, got L = {L}.")
    lead = [x.shape[: x.ndim - k] for x, k in ((a, len(expected)), (b, 2), (c, 2))]
    try:
        batch = torch.broadcast_shapes(*lead)
    except RuntimeError:
        raise ValueError(
            "The leading (channel/batch) dimensions of `a`, `b`, `c` do not broadcast: "
            f"{tuple(lead[0])}, {tuple(lead[1])}, {tuple(lead[2])}."
        ) from None
    return a, b, c, diagonal, batch


def _flatten(a, b, c, diagonal, batch, dtype, device):
    """Broadcast to the common batch and flatten it to one leading dimension."""
    L, N = b.shape[-2:]
    tail = (L, N) if diagonal else (L, N, N)
    a = a.to(device=device, dtype=dtype).expand(*batch, *tail).reshape(-1, *tail)
    b = b.to(device=device, dtype=dtype).expand(*batch, L, N).reshape(-1, L, N)
    c = c.to(device=device, dtype=dtype).expand(*batch, L, N).reshape(-1, L, N)
    return a, b, c


def recurrence_spectra(a, b, c, *, dtype=None, device=None) -> torch.Tensor:
    """Singular values of every split of a recurrence's operator, in O(L N^3).

    Parameters
    ----------
    a : torch.Tensor or numpy.ndarray, shape (..., L, N) or (..., L, N, N)
        The transitions ``A_t``: diagonal (one row of N entries per step) or dense.
        ``A_0`` acts on the zero initial state and never matters.
    b : torch.Tensor or numpy.ndarray, shape (..., L, N)
        Input vectors ``b_t``.
    c : torch.Tensor or numpy.ndarray, shape (..., L, N)
        Output vectors ``c_t``.
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute; CUDA when available by default. The result is returned
        on the device of ``b``.

    Returns
    -------
    torch.Tensor, shape (..., L-1, min(N, L // 2))
        Row ``i-1`` holds the singular values of ``T[..., i:, :i]`` sorted
        descending, exactly zero past ``min(i, L-i, N)``. Leading dimensions are
        the broadcast of those of ``a``, ``b``, ``c``.

    See Also
    --------
    recurrence_operator : the dense ``T`` of the same recurrence.
    spectra : the dense path, which this function matches.

    Examples
    --------
    A leaky running sum has one state, so one singular value per split:

    >>> import torch
    >>> from ess_widgets import recurrence_operator, recurrence_spectra, spectra
    >>> L = 8
    >>> a = torch.full((L, 1), 0.5, dtype=torch.float64)
    >>> b = c = torch.ones(L, 1, dtype=torch.float64)
    >>> s = recurrence_spectra(a, b, c)
    >>> s.shape
    torch.Size([7, 1])
    >>> torch.allclose(s, spectra(recurrence_operator(a, b, c))[:, :1])
    True
    """
    a, b, c, diagonal, batch = _check_recurrence(a, b, c)
    out_device = b.device
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    a, b, c = _flatten(a, b, c, diagonal, batch, dt, dev)
    L, N = b.shape[-2:]
    channels = b.shape[0]
    per_channel = 2 * L * N * N * torch.finfo(dt).bits // 8
    chunk = max(1, _CHUNK_BYTES // per_channel)
    if dev.type == "cpu":  # one chunk per core at least, for the split workers
        chunk = min(chunk, -(-channels // torch.get_num_threads()))
    starts = range(0, channels, chunk)
    with split_workers(dev) as imap:
        parts = list(
            imap(
                lambda k: _sqrt_gramian_spectra(
                    a[k : k + chunk], b[k : k + chunk], c[k : k + chunk], diagonal
                ),
                starts,
            )
        )
    out = torch.cat(parts) if parts else b.new_zeros(0, L - 1, min(N, L // 2))
    return out.reshape(*batch, L - 1, -1).to(out_device)


def _sqrt_gramian_spectra(a, b, c, diagonal):
    """``(B, L, ...)`` inputs, ``(B, L-1, min(N, L//2))`` output."""
    B, L, N = b.shape

    def apply_left(i, m):  # A_i @ m
        return a[:, i, :, None] * m if diagonal else a[:, i] @ m

    def apply_right(i, m):  # m @ A_i
        return m * a[:, i, None, :] if diagonal else m @ a[:, i]

    # 1. reachability factors, forward: [A_i S_i, b_i] = S_(i+1) Q  ->  S_(i+1) = R^T.
    factors = b.new_empty(B, L - 1, N, N)
    s = b.new_zeros(B, N, N)
    for i in range(L - 1):
        m = torch.cat([apply_left(i, s), b[:, i, :, None]], dim=-1)  # (B, N, N+1)
        s = torch.linalg.qr(m.mT, mode="r").R.mT
        factors[:, i] = s  # S_(i+1)
    # 2. observability factors, backward: [c_i^T A_i; Z_(i+1) A_i] = Q Z_i.
    z = b.new_zeros(B, N, N)
    for i in range(L - 1, 0, -1):
        m = torch.cat([apply_right(i, c[:, i, None, :]), apply_right(i, z)], dim=-2)
        z = torch.linalg.qr(m, mode="r").R
        factors[:, i - 1] = z @ factors[:, i - 1]  # Z_i S_i
    # 3. sigma(H_i) = svdvals(Z_i S_i); entries past min(i, L-i) are zero by structure.
    sv = torch.linalg.svdvals(factors)
    K = min(N, L // 2)
    sv = sv[..., :K]
    split = torch.arange(1, L, device=b.device)
    rank_cap = torch.minimum(split, L - split)
    return sv.masked_fill(torch.arange(K, device=b.device) >= rank_cap[:, None], 0.0)


def recurrence_operator(a, b, c, *, dtype=None, device=None) -> torch.Tensor:
    """The dense causal operator ``T`` of a recurrence, by running it on impulses.

    Reference for ``recurrence_spectra`` and the dense view of recurrent mixers:
    ``T[t, j] = c_t^T A_t ... A_(j+1) b_j`` for ``j <= t``, zero above the diagonal.

    Parameters
    ----------
    a, b, c : as in ``recurrence_spectra``.
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute; by default the device of ``b``.

    Returns
    -------
    torch.Tensor, shape (..., L, L)
    """
    a, b, c, diagonal, batch = _check_recurrence(a, b, c)
    check_dense_size(batch, b.shape[-2], resolve_dtype(dtype), "recurrence_operator")
    dev = b.device if device is None else torch.device(device)
    a, b, c = _flatten(a, b, c, diagonal, batch, resolve_dtype(dtype), dev)
    B, L, N = b.shape
    T = b.new_zeros(B, L, L)
    x = b.new_zeros(B, N, L)  # column j: the state an impulse at time j has left
    for t in range(L):
        x = a[:, t, :, None] * x if diagonal else a[:, t] @ x
        x[:, :, t] = b[:, t]
        T[:, t] = (c[:, t, None, :] @ x).squeeze(-2)
    return T.reshape(*batch, L, L)
