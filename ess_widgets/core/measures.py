"""ESS measures from split spectra: tolerance-ESS, entropy-ESS, and the bound."""

from __future__ import annotations

import operator

import torch

from ._validation import check_spectra, check_tol

__all__ = ["tolerance_ess", "entropy_ess", "ess_bound"]


def tolerance_ess(spectra, tol, *, relative=False) -> torch.Tensor:
    """Number of singular values above a tolerance, at every split.

    Parameters
    ----------
    spectra : torch.Tensor or numpy.ndarray, shape (..., L-1, K)
        Singular values per split, as returned by ``spectra`` or
        ``recurrence_spectra`` (zero padding is never counted for ``tol >= 0``).
    tol : float
        Tolerance ``tau >= 0``. A singular value counts when it is strictly
        greater than ``tau`` (absolute) or than ``tau * sigma_1`` of its split
        (``relative=True``).
    relative : bool, default False
        Measure ``tol`` against the largest singular value of each split.

    Returns
    -------
    torch.Tensor of int64, shape (..., L-1)

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import tolerance_ess
    >>> tolerance_ess(torch.tensor([[3.0, 1.0, 1e-9]]), 1e-6)
    tensor([2])
    >>> tolerance_ess(torch.tensor([[3.0, 1.0, 1e-9]]), 0.5, relative=True)
    tensor([1])
    """
    s = check_spectra(spectra)
    tau = check_tol(tol)
    threshold = tau * s[..., :1] if relative else tau
    return (s > threshold).sum(-1)


def entropy_ess(spectra) -> torch.Tensor:
    """Exponential of the entropy of the normalized singular values, at every split.

    With ``p_k = sigma_k / sum_m sigma_m``, ``ESS = exp(-sum_k p_k ln p_k)`` and
    ``0 ln 0 = 0``; a split whose block is zero has ESS 0. It needs no tolerance,
    is unchanged when the operator is scaled, and lies in ``[1, rank]``.

    Parameters
    ----------
    spectra : torch.Tensor or numpy.ndarray, shape (..., L-1, K)

    Returns
    -------
    torch.Tensor, shape (..., L-1)
        In the dtype of ``spectra`` (float64 for integer input).

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import entropy_ess
    >>> entropy_ess(torch.tensor([[2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    tensor([3., 0.])
    """
    s = check_spectra(spectra)
    total = s.sum(-1, keepdim=True)
    p = s / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0)
    ess = torch.exp(-plogp.sum(-1))
    return torch.where(total.squeeze(-1) > 0, ess, torch.zeros_like(ess))


def ess_bound(L: int) -> torch.Tensor:
    """The bound ``min(i, L - i)`` on ESS at splits ``i = 1 .. L-1``.

    ``T[i:, :i]`` is ``(L-i) x i``, so no split can hold more state than that.

    Parameters
    ----------
    L : int
        Sequence length, at least 2.

    Returns
    -------
    torch.Tensor of int64, shape (L-1,)

    Examples
    --------
    >>> from ess_widgets import ess_bound
    >>> ess_bound(6)
    tensor([1, 2, 3, 2, 1])
    """
    try:
        L = operator.index(L)
    except TypeError:
        raise TypeError(f"`L` must be an int, got {type(L).__name__}.") from None
    if L < 2:
        raise ValueError(f"`L` must be at least 2 to have a split, got L = {L}.")
    i = torch.arange(1, L)
    return torch.minimum(i, L - i)
