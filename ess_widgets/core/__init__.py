"""Core math: split spectra of causal operators and the ESS measures.

No torch.nn, no widgets: plain functions on tensors.
"""

from .delta import DeltaTransition
from .measures import (
    DEFAULT_TOL,
    entropy_ess,
    ess_bound,
    tolerance_ess,
    tolerance_mask,
    tolerance_threshold,
)
from .recurrence import recurrence_bytes, recurrence_operator, recurrence_spectra
from .spectra import iter_spectra, spectra, spectra_ref
from .splits import normalize_splits

__all__ = [
    "spectra",
    "spectra_ref",
    "iter_spectra",
    "recurrence_spectra",
    "recurrence_operator",
    "recurrence_bytes",
    "DeltaTransition",
    "normalize_splits",
    "tolerance_ess",
    "tolerance_threshold",
    "tolerance_mask",
    "DEFAULT_TOL",
    "entropy_ess",
    "ess_bound",
]
