"""ESS measures from split spectra: tolerance-ESS, entropy-ESS, and the bound.

The tolerance rule lives here only: a singular value counts when it is strictly
above ``tol`` (absolute) or above ``tol * sigma_1`` of its split (relative).
``tolerance_threshold`` gives that cut per split, ``tolerance_mask`` which values
pass it, and ``tolerance_ess`` how many. All three run in numpy on numpy input
(no torch thread pool for a cheap re-threshold of cached spectra) and in torch on
torch input.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from ._validation import check_flag, check_spectra, check_tol

__all__ = [
    "DEFAULT_TOL",
    "tolerance_threshold",
    "tolerance_mask",
    "tolerance_ess",
    "entropy_ess",
    "ess_bound",
]

#: The tolerance used when none is given (tables, the explorer): absolute 1e-3.
DEFAULT_TOL = 1e-3


def _threshold(s, tau: float, relative: bool):
    """The cut per split, shape ``s.shape[:-1]``, in the array kind and dtype of ``s``."""
    if isinstance(s, np.ndarray):
        if relative:  # sigma_1 is the largest value of the row; 0 for an empty row
            return tau * s.max(-1, initial=0.0)
        return np.full(s.shape[:-1], tau, dtype=s.dtype)
    if not relative:
        return s.new_full(s.shape[:-1], tau)  # the dtype and device of s
    if s.shape[-1] == 0:
        return s.new_zeros(s.shape[:-1])
    return tau * s.amax(-1)


def _checked(spectra, tol, relative):
    s = check_spectra(spectra, keep_numpy=True)
    return s, check_tol(tol), check_flag(relative, "relative")


def tolerance_threshold(spectra, tol, *, relative=False):
    """The value a singular value must exceed to count, at every split.

    Parameters
    ----------
    spectra : numpy.ndarray or torch.Tensor, shape (..., L-1, K)
        Singular values per split (any order within a row).
    tol : float
        Tolerance ``tau >= 0``.
    relative : bool, default False
        The cut is ``tau * sigma_1`` (largest value of each split) instead of ``tau``.

    Returns
    -------
    numpy.ndarray or torch.Tensor, shape (..., L-1)
        Numpy for numpy (or list) input, torch otherwise; the dtype of ``spectra``.

    Examples
    --------
    >>> import numpy as np
    >>> from ess_widgets.core import tolerance_threshold
    >>> tolerance_threshold(np.array([[4.0, 1.0], [0.5, 2.0]]), 0.25, relative=True).tolist()
    [1.0, 0.5]
    """
    return _threshold(*_checked(spectra, tol, relative))


def tolerance_mask(spectra, tol, *, relative=False):
    """Which singular values count for the tolerance-ESS: ``sigma > threshold``.

    Parameters
    ----------
    spectra, tol, relative : as in ``tolerance_threshold``.

    Returns
    -------
    numpy.ndarray or torch.Tensor of bool, shape (..., L-1, K)
        Numpy for numpy (or list) input, torch otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from ess_widgets.core import tolerance_mask
    >>> tolerance_mask(np.array([[3.0, 1.0, 1e-9]]), 1e-6).tolist()
    [[True, True, False]]
    """
    s, tau, relative = _checked(spectra, tol, relative)
    return s > _threshold(s, tau, relative)[..., None]


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
        Measure ``tol`` against the largest singular value of each split. Must be
        a bool: a string such as ``"no"`` is a TypeError.

    Returns
    -------
    torch.Tensor of int64, shape (..., L-1)
        Computed in numpy for numpy input (then wrapped without a copy: call
        ``.numpy()`` to get the array back).

    See Also
    --------
    tolerance_threshold : the cut per split.
    tolerance_mask : which singular values count.

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import tolerance_ess
    >>> tolerance_ess(torch.tensor([[3.0, 1.0, 1e-9]]), 1e-6)
    tensor([2])
    >>> tolerance_ess(torch.tensor([[3.0, 1.0, 1e-9]]), 0.5, relative=True)
    tensor([1])
    """
    above = tolerance_mask(spectra, tol, relative=relative)
    if isinstance(above, np.ndarray):
        return torch.from_numpy(np.count_nonzero(above, axis=-1).astype(np.int64))
    return above.sum(-1)


def entropy_ess(spectra) -> torch.Tensor:
    """Exponential of the entropy of the normalized singular values, at every split.

    With ``p_k = sigma_k / sum_m sigma_m``, ``ESS = exp(-sum_k p_k ln p_k)`` and
    ``0 ln 0 = 0``; a split whose block is zero has ESS 0. It needs no tolerance,
    is unchanged when the operator is scaled, and lies in ``[1, rank]``.

    Each row is divided by its largest value before summing, and half-precision
    input is computed in float32, so the sum cannot overflow (float16 ``[6e4, 6e4]``
    gives 2) and tiny values (1e-200) do not underflow.

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
    out_dtype = s.dtype
    s = s.to(torch.promote_types(s.dtype, torch.float32))  # no half-precision sums
    top = s.amax(-1, keepdim=True) if s.shape[-1] else s.sum(-1, keepdim=True)
    s = s / top  # largest value 1: the sum cannot overflow (a zero row: NaN, masked below)
    p = s / s.sum(-1, keepdim=True)
    ess = torch.exp(-torch.xlogy(p, p).sum(-1))  # xlogy: 0 ln 0 = 0
    return torch.where(top.squeeze(-1) > 0, ess, 0.0).to(out_dtype)


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
