"""Checks for adapters that recompute a mixer's coefficients from its input.

Where a mixer calls no module-level function that could be recorded (MiniMax's
lightning attention, LFM's short convolutions, RecurrentGemma's RG-LRU), its
adapter hooks the module, recomputes the projections and gates in float64 from
what the module received, and holds the result against what the module itself
produced. A mismatch means this transformers version computes the mixer
differently: the adapter raises instead of measuring something else.
"""

from __future__ import annotations

import torch

__all__ = ["check_recomputed", "tolerance_for"]

# Relative tolerance per model dtype: float64 models still accumulate some
# recurrences in float32 (RecurrentGemma's scan), float32 models round the
# projections that float64 recomputes.
_TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-3}


def tolerance_for(dtype: torch.dtype) -> float:
    """The relative tolerance of ``check_recomputed`` for a model computing in ``dtype``."""
    return _TOLERANCE.get(dtype, 5e-2)


def check_recomputed(what: str, layer: int, recomputed, produced) -> float:
    """Raise unless ``recomputed`` equals the model's ``produced`` output.

    Parameters
    ----------
    what : str
        The mixer, for the message (``"RG-LRU"``).
    layer : int
        Its layer index.
    recomputed : torch.Tensor
        The adapter's float64 recomputation.
    produced : torch.Tensor
        What the model's module produced, same shape, any floating dtype.

    Returns
    -------
    float
        The relative error, ``max |recomputed - produced| / max |produced|``.
    """
    expected = produced.detach().to(torch.float64)
    scale = float(expected.abs().max())
    error = float((recomputed - expected).abs().max()) / scale if scale > 0 else 0.0
    tol = tolerance_for(produced.dtype)
    if not error <= tol:
        raise RuntimeError(
            f"The {what} of layer {layer}, recomputed from the module's input, differs from "
            f"the module's own output by {error:.3g} (relative; allowed {tol:g} for "
            f"{produced.dtype}). This transformers version computes the mixer differently "
            "from what ess_widgets expects, so its operators would measure something else."
        )
    return error
