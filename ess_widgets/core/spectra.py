"""Singular values of every split block ``T[i:, :i]`` of a dense causal operator.

Two ways to the same numbers:

- ``spectra_ref``: the readable reference, one ``svdvals`` per split.
- ``spectra``: the fast path. ``method="svd"`` runs the same SVDs in parallel;
  ``method="gram"`` takes eigenvalues of the smaller Gram matrix of each block
  (``H^T H`` left of the middle, ``H H^T`` right of it), both Gram sequences
  built by rank-one updates in O(L^3) instead of O(L^4).

Shapes: ``T`` is ``(..., L, L)``; results are ``(..., L-1, K)`` with
``K = L // 2``, row ``i-1`` holding the singular values of ``T[..., i:, :i]``
in descending order, zero-padded past ``min(i, L-i)``.
"""

from __future__ import annotations

import torch

from ._compute import resolve_device, resolve_dtype, split_workers
from ._validation import check_operator

__all__ = ["spectra", "spectra_ref"]

METHODS = ("auto", "svd", "gram")


def _prepare(T, dtype, device, check_causal):
    t = check_operator(T, "T", check_causal=check_causal)
    out_device = t.device
    # The per-split solves are small and latency-bound: measured on an H100 machine,
    # 12 heads x L=512 took 5.8 s on the GPU and 0.5 s on its 16 CPU cores.
    dev = torch.device("cpu") if device is None else resolve_device(device)
    dt = resolve_dtype(dtype)
    return t, t.to(device=dev, dtype=dt), out_device


def spectra_ref(T, *, dtype=None, device=None, check_causal=True) -> torch.Tensor:
    """Singular values of every split, one plain SVD per split (reference).

    Parameters
    ----------
    T : torch.Tensor or numpy.ndarray, shape (..., L, L)
        Causal operators (lower triangular), rows are outputs, columns inputs.
    dtype : torch.dtype, optional
        Precision of the SVD; float64 by default.
    device : str or torch.device, optional
        Where to compute; the CPU by default (see ``spectra``).
    check_causal : bool, default True
        Refuse operators with entries above the diagonal.

    Returns
    -------
    torch.Tensor, shape (..., L-1, L // 2)
        Row ``i-1`` holds ``svdvals(T[..., i:, :i])``, zero-padded.
    """
    _, t, out_device = _prepare(T, dtype, device, check_causal)
    L = t.shape[-1]
    out = t.new_zeros(*t.shape[:-2], L - 1, L // 2)
    for i in range(1, L):
        out[..., i - 1, : min(i, L - i)] = torch.linalg.svdvals(t[..., i:, :i])
    return out.to(out_device)


def spectra(T, *, method="auto", dtype=None, device=None, check_causal=True) -> torch.Tensor:
    """Singular values of every split block ``T[..., i:, :i]``.

    Parameters
    ----------
    T : torch.Tensor or numpy.ndarray, shape (..., L, L)
        Causal operators (lower triangular): rows are outputs, columns inputs.
        Leading dimensions (heads, channels, batch) are kept.
    method : {"auto", "svd", "gram"}, default "auto"
        ``"svd"``: an SVD of every block, exact to the working precision.
        ``"gram"``: eigenvalues of the smaller Gram matrix of every block; about
        3x faster, with an absolute error near ``sqrt(eps) * sigma_1`` (1.5e-8
        ``sigma_1`` in float64), so values far below that are noise.
        ``"auto"`` picks ``"gram"`` when ``T`` has less precision than the
        working dtype (float32 input, float64 work): the input's own rounding
        (6e-8 ``sigma_1``) then dominates the Gram error. Otherwise ``"svd"``.
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute. The CPU by default, also for CUDA input: one small
        solve per split is latency-bound on a GPU (12 heads x L=512: 5.8 s on an
        H100, 0.5 s on its 16 CPU cores). ``device="cuda"`` opts in. The result
        is returned on the device of ``T`` (the CPU for numpy input).
    check_causal : bool, default True
        Raise a ValueError when ``T`` has entries above the diagonal, which usually
        means a transposed or bidirectional operator. ``False`` reads only the
        lower part on purpose.

    Returns
    -------
    torch.Tensor, shape (..., L-1, L // 2)
        Row ``i-1`` holds the singular values of ``T[..., i:, :i]``, sorted
        descending, zero-padded past ``min(i, L-i)``; dtype is the working dtype.

    See Also
    --------
    spectra_ref : the one-SVD-per-split reference this function is tested against.
    recurrence_spectra : the same numbers for a recurrence, without forming T.
    tolerance_ess, entropy_ess : ESS from these spectra.

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import spectra
    >>> T = torch.tril(torch.ones(6, 6, dtype=torch.float64))  # running sum: state 1
    >>> spectra(T)[:, 0]
    tensor([2.2361, 2.8284, 3.0000, 2.8284, 2.2361], dtype=torch.float64)
    >>> spectra(T).shape
    torch.Size([5, 3])
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    original, t, out_device = _prepare(T, dtype, device, check_causal)
    if method == "auto":
        lower_precision = torch.finfo(original.dtype).eps > torch.finfo(t.dtype).eps
        method = "gram" if lower_precision else "svd"
    L = t.shape[-1]
    out = t.new_zeros(*t.shape[:-2], L - 1, L // 2)
    if method == "svd":
        work, items = _svdvals, ((i, t[..., i:, :i]) for i in range(1, L))
    else:
        work, items = _sqrt_eigvalsh, _gram_matrices(t)
    with split_workers(t.device) as imap:
        for i, s in imap(work, items):
            out[..., i - 1, : min(i, L - i)] = s
    return out.to(out_device)


def _svdvals(item):
    i, block = item
    return i, torch.linalg.svdvals(block)


def _sqrt_eigvalsh(item):
    i, gram = item
    # eigvalsh sorts ascending; rounding can push zero eigenvalues slightly negative.
    return i, torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0).sqrt()


def _gram_matrices(t: torch.Tensor):
    """Yield ``(i, gram)``, the smaller Gram matrix of ``t[..., i:, :i]``, for every split.

    Left of the middle (i <= L - i) it is ``H^T H`` (i x i); it gains one row of
    ``T`` as i decreases, so it is built from the middle down. Right of the middle
    it is ``H H^T`` ((L-i) x (L-i)); it loses a row and gains a column of ``T`` as
    i increases. Only additions, so no cancellation. Each yielded matrix is a copy.
    """
    L = t.shape[-1]
    half = L // 2  # last split with i <= L - i
    # 1. left: G_i = sum_{r >= i} T[r, :i]^T T[r, :i], from i = half down to 1.
    head = t[..., half:, :half]
    g = head.mT @ head
    yield half, g.clone()
    for i in range(half - 1, 0, -1):
        row = t[..., i, :i]
        g = g[..., :i, :i].addcmul_(row[..., :, None], row[..., None, :])
        yield i, g.clone()
    # 2. right: R_i = T[i:, :i] T[i:, :i]^T, from i = half + 1 up to L - 1.
    if half + 1 > L - 1:
        return
    block = t[..., half + 1 :, : half + 1]
    r = block @ block.mT
    yield half + 1, r.clone()
    for i in range(half + 2, L):
        col = t[..., i:, i - 1]
        r = r[..., 1:, 1:].addcmul_(col[..., :, None], col[..., None, :])
        yield i, r.clone()
