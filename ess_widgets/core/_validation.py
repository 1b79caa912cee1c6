"""Input checks shared by the core functions.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, says what was expected and what was received, and how to fix it.
"""

from __future__ import annotations

import numpy as np
import torch

# Entries above the diagonal smaller than this fraction of max |T| count as zero
# (softmax with a large negative mask can leave denormal crumbs).
CAUSAL_RTOL = 1e-6


def as_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor, or raise a TypeError naming ``name``."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
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

    Returns the input as a floating torch tensor (not copied when possible).
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
    if check_causal:
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
    """Validate a non-negative finite tolerance."""
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


def check_spectra(spectra, name: str = "spectra") -> torch.Tensor:
    """Validate an array of singular values of shape ``(..., L-1, K)``."""
    s = as_tensor(spectra, name)
    if s.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (..., L-1, K) (one row of singular values per "
            f"split), got shape {tuple(s.shape)}. Compute it with ess_widgets.spectra(T)."
        )
    check_finite(s, name)
    if bool((s < 0).any()):
        raise ValueError(
            f"`{name}` holds negative values; singular values are >= 0. Pass the output "
            "of ess_widgets.spectra or recurrence_spectra."
        )
    return s
