"""Input checks shared by the core functions.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, says what was expected and what was received, and how to fix it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

# Entries above the diagonal smaller than this fraction of max |T| count as zero
# (softmax with a large negative mask can leave denormal crumbs).
CAUSAL_RTOL = 1e-6


def as_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor, or raise a TypeError naming ``name``."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple)):
        t = torch.from_numpy(_as_numpy(x, name))  # numpy's checks and messages, no copy
    else:
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    if t.is_complex():
        raise TypeError(f"`{name}` must be real, got complex dtype {t.dtype}.")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise a ValueError if ``t`` holds NaN or Inf."""
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(
            f"`{name}` contains {n_nan} NaN and {n_inf} Inf values; "
            "ESS is only defined for finite operators. Check the model output or "
            "replace them (e.g. torch.nan_to_num) before calling."
        )


def check_operator(T, name: str = "T", *, check_causal: bool = True) -> torch.Tensor:
    """Validate a batch of causal operators of shape ``(..., L, L)``.

    Returns the input as a floating torch tensor (not copied when possible). An
    empty batch (a leading dimension of size 0, e.g. ``(0, 4, 4)``) is valid: there
    is nothing to check, and the callers (``spectra``) return an empty result of
    shape ``(0, ..., L-1, K)``.
    """
    t = as_tensor(T, name)
    if t.ndim < 2:
        raise ValueError(
            f"`{name}` must have at least 2 dimensions (..., L, L), got shape "
            f"{tuple(t.shape)}. Pass a square operator matrix; a 1-D convolution kernel "
            "must first become its Toeplitz matrix (ess_widgets.operators.convolution)."
        )
    rows, cols = t.shape[-2], t.shape[-1]
    if rows != cols:
        raise ValueError(
            f"`{name}` must be square in its last two dimensions (..., L, L), got "
            f"{rows} rows and {cols} columns (shape {tuple(t.shape)})."
        )
    if rows < 2:
        raise ValueError(
            f"`{name}` needs a sequence length L >= 2 to have a split, got L = {rows}."
        )
    check_finite(t, name)
    if check_causal and t.numel():  # amax of an empty batch is undefined
        upper = torch.triu(t, diagonal=1).abs().amax()
        scale = t.abs().amax()
        if upper > CAUSAL_RTOL * scale:
            raise ValueError(
                f"`{name}` is not causal: it has non-zero entries above the diagonal "
                f"(largest {float(upper):.3g}, against max |{name}| = {float(scale):.3g}). "
                "ESS reads the blocks T[i:, :i] below the diagonal, so a transposed or "
                f"bidirectional operator gives wrong numbers. Pass `{name}` with rows as "
                "outputs and columns as inputs, or check_causal=False to use only its "
                "lower part on purpose."
            )
    return t


def check_tol(tol: float, name: str = "tol") -> float:
    """Validate a non-negative finite tolerance (a real number, not a string or bool)."""
    if isinstance(tol, (str, bytes, bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be a number, got {type(tol).__name__} {tol!r}. Pass e.g. {name}=1e-3."
        )
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number, got {type(tol).__name__}.") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0, got {tol!r}. Use e.g. {name}=1e-3 "
            "(absolute) or relative=True for a fraction of the largest singular value."
        )
    return value


def check_flag(value, name: str) -> bool:
    """A real bool (numpy's too): strings such as ``"no"`` would read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be True or False, got {type(value).__name__} {value!r}. "
            f"Pass {name}=True or {name}=False."
        )
    return bool(value)


def _as_numpy(x, name: str) -> np.ndarray:
    """``x`` (numpy array, list or tuple) as a floating numpy array."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # ragged nested lists
        raise TypeError(f"`{name}` must be a rectangular array of numbers.") from None
    if np.iscomplexobj(a):
        raise TypeError(f"`{name}` must be real, got complex dtype {a.dtype}.")
    if a.dtype.kind not in ("f", "i", "u", "b"):  # floats, ints, unsigned ints, bools
        raise TypeError(f"`{name}` must hold numbers, got dtype {a.dtype}.")
    return a if a.dtype.kind == "f" else np.asarray(a, dtype=np.float64)


def check_spectra(spectra, name: str = "spectra", *, keep_numpy: bool = False):
    """Validate an array of singular values of shape ``(..., L-1, K)``.

    Returns a floating torch tensor; with ``keep_numpy=True`` a numpy array (or a
    list) stays in numpy, so that re-thresholding cached spectra needs no torch.
    """
    numpy = keep_numpy and isinstance(spectra, (np.ndarray, list, tuple))
    s = _as_numpy(spectra, name) if numpy else as_tensor(spectra, name)
    if s.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (..., L-1, K) (one row of singular values per "
            f"split), got shape {tuple(s.shape)}. Compute it with ess_widgets.spectra(T)."
        )
    if not numpy:
        check_finite(s, name)
    elif not np.isfinite(s).all():
        check_finite(torch.from_numpy(s), name)  # the same message, with the counts
    if bool((s < 0).any()):
        raise ValueError(
            f"`{name}` holds negative values; singular values are >= 0. Pass the output "
            "of ess_widgets.spectra or recurrence_spectra."
        )
    return s


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def check_allocation(nbytes: int, what: str, fix: str) -> None:
    """Refuse to allocate more than the machine's physical memory, before trying.

    Parameters
    ----------
    nbytes : int
        Bytes the allocation needs.
    what : str
        What would be allocated, e.g. ``"recurrence_operator: T of shape (4, 10**6, 10**6)"``.
    fix : str
        What the caller can do instead.
    """
    limit = physical_memory()
    if limit is not None and nbytes > limit:
        raise ValueError(
            f"{what} needs {nbytes:,} bytes ({nbytes / 2**30:,.1f} GiB), more than this "
            f"machine's {limit:,} bytes ({limit / 2**30:,.1f} GiB) of memory. {fix}"
        )


def check_dense_size(batch, L: int, dtype: torch.dtype, what: str) -> None:
    """Refuse a dense ``(*batch, L, L)`` operator that cannot fit in memory.

    One-line hook for the functions that materialize ``T``
    (``recurrence_operator``, ``CausalOperator.dense``).
    """
    shape = (*batch, L, L)
    check_allocation(
        math.prod(shape) * dtype.itemsize,
        f"{what}: a dense operator of shape {shape} in {dtype}",
        "Use the split spectra without the dense form (recurrence_spectra, or "
        "CausalOperator.spectra() for a mixer with a recurrence), or pass fewer "
        "channels or a shorter sequence.",
    )
