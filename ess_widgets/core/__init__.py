"""Core math: split spectra of causal operators and the ESS measures.

No torch.nn, no widgets: plain functions on tensors.
"""

from .measures import entropy_ess, ess_bound, tolerance_ess
from .recurrence import recurrence_operator, recurrence_spectra
from .spectra import spectra, spectra_ref

__all__ = [
    "spectra",
    "spectra_ref",
    "recurrence_spectra",
    "recurrence_operator",
    "tolerance_ess",
    "entropy_ess",
    "ess_bound",
]
