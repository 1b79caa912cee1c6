"""The tidy ESS table: one row per layer, operator (head or channel) and split.

Columns, in order:

========== ========= ================================================================
column     dtype     meaning
========== ========= ================================================================
layer      int32     layer index, 0-based
kind       category  the layer's mixer: "attention", "mamba", "mamba2",
                     "gated_deltanet", "kimi_delta_attention"; MQAR models
                     (``adapters.mqar``): their operator family, "linear_attention",
                     "weighted_linear_attention", "gated_linear_attention",
                     "softmax_attention", "selective_ssm"
channel    int32     head (attention, Mamba2) or inner channel (Mamba) index
split      int32     split i in 1..L-1: block T[i:, :i]
token      category  the token read just before the split, tokens[i - 1]
tolerance_ess int32  #{sigma_k > tol} (or > tol * sigma_1 when relative)
entropy_ess float64  exp(entropy of the normalized singular values)
bound      int32     min(i, L - i)
tss        int64     theoretical state size at the split
========== ========= ================================================================

``DataFrame.attrs`` records the tolerance, its mode, the model and the tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import entropy_ess, tolerance_ess
from .layer_operators import LayerOperators

__all__ = ["COLUMNS", "layer_frame", "token_dtype", "join_layers"]

COLUMNS = (
    "layer",
    "kind",
    "channel",
    "split",
    "token",
    "tolerance_ess",
    "entropy_ess",
    "bound",
    "tss",
)

KIND_DTYPE = pd.CategoricalDtype(
    [
        "attention",
        "mamba",
        "mamba2",
        "linear_attention",
        "weighted_linear_attention",
        "gated_linear_attention",
        "softmax_attention",
        "selective_ssm",
        "gated_deltanet",
        "kimi_delta_attention",
    ]
)


def token_dtype(tokens) -> pd.CategoricalDtype:
    """A categorical dtype over the distinct token strings, in order of appearance."""
    return pd.CategoricalDtype(list(dict.fromkeys(tokens)))


def layer_frame(
    ops: LayerOperators, *, tol: float, relative: bool, tokens: pd.CategoricalDtype, **kwargs
) -> pd.DataFrame:
    """The ESS rows of one layer.

    Parameters
    ----------
    ops : LayerOperators
    tol : float
        Tolerance of the tolerance-ESS.
    relative : bool
        Measure ``tol`` against ``sigma_1`` of each split.
    tokens : pandas.CategoricalDtype
        From ``token_dtype(ops.tokens)``, shared by all layers of a table.
    **kwargs
        Passed to ``ops.spectra``.

    Returns
    -------
    pandas.DataFrame
        ``C * (L - 1)`` rows with the columns ``COLUMNS``.
    """
    s = ops.spectra(**kwargs)
    C, n = s.shape[0], s.shape[1]
    tol_ess = tolerance_ess(s, tol, relative=relative).cpu().numpy()
    ent = entropy_ess(s).cpu().numpy()
    split = np.arange(1, n + 1, dtype=np.int32)
    codes = tokens.categories.get_indexer(list(ops.tokens[:-1]))
    kind = KIND_DTYPE.categories.get_loc(ops.kind)
    return pd.DataFrame(
        {
            "layer": np.full(C * n, ops.layer, dtype=np.int32),
            "kind": pd.Categorical.from_codes(
                np.full(C * n, kind, dtype=np.int8), dtype=KIND_DTYPE
            ),
            "channel": np.repeat(np.arange(C, dtype=np.int32), n),
            "split": np.tile(split, C),
            "token": pd.Categorical.from_codes(np.tile(codes, C), dtype=tokens),
            "tolerance_ess": tol_ess.reshape(-1).astype(np.int32),
            "entropy_ess": ent.reshape(-1).astype(np.float64),
            "bound": np.tile(ops.bound.numpy().astype(np.int32), C),
            "tss": ops.tss.cpu().numpy().reshape(-1).astype(np.int64),
        },
        columns=list(COLUMNS),
    )


def join_layers(frames, enc, *, model: str, tol: float, relative: bool, channel: dict):
    """Concatenate per-layer frames into the ESS table and record how it was made.

    ``attrs`` holds ``model``, ``tol``, ``relative``, ``tokens``, ``token_ids`` and
    ``channel`` (what one channel is, per kind).
    """
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table = table[list(COLUMNS)]
    table.attrs.update(
        {
            "model": model,
            "tol": float(tol),
            "relative": bool(relative),
            "tokens": list(enc.tokens),
            "token_ids": enc.ids.tolist(),
            "channel": channel,
        }
    )
    return table
