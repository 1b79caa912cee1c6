"""The tidy ESS table: one row per layer, mixer, channel and split.

Columns, in order:

============= ========= ==============================================================
column        dtype     meaning
============= ========= ==============================================================
layer         int32     layer (decoder block) index, 0-based
mixer         category  the mixer's name in its block: "attention", "ssm",
                        "linear_attention", "conv", ... (a block may hold several)
kind          category  the operator family: "softmax_attention", "selective_ssm",
                        "ssd", "linear_attention", "weighted_linear_attention",
                        "gated_linear_attention", ...
channel       int32     channel index: a head (attention, SSD) or an inner channel
                        (selective SSM); ``attrs["channel_label"]`` says which
split         int32     split i in 1..L-1: block T[i:, :i]
token         category  the token read just before the split, tokens[i - 1]
tolerance_ess int32     #{sigma_k > tol} (or > tol * sigma_1 when relative)
entropy_ess   float64   exp(entropy of the normalized singular values)
bound         int32     min(i, L - i)
tss           int64     theoretical state size at the split
============= ========= ==============================================================

``DataFrame.attrs`` records the tolerance, its mode, the model, the tokens and the
splits. MLP-only blocks have no rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import entropy_ess, ess_bound, tolerance_ess
from .layer_operators import LayerOperators

__all__ = ["COLUMNS", "layer_frame", "token_dtype", "join_layers"]

COLUMNS = (
    "layer",
    "mixer",
    "kind",
    "channel",
    "split",
    "token",
    "tolerance_ess",
    "entropy_ess",
    "bound",
    "tss",
)


def token_dtype(tokens) -> pd.CategoricalDtype:
    """A categorical dtype over the distinct token strings, in order of appearance."""
    return pd.CategoricalDtype(list(dict.fromkeys(tokens)))


def layer_frame(
    ops: LayerOperators,
    *,
    tol: float,
    relative: bool,
    tokens: pd.CategoricalDtype,
    splits=None,
    progress=None,
    chunks: int = 1,
    **kwargs,
) -> pd.DataFrame:
    """The ESS rows of one mixer.

    Parameters
    ----------
    ops : LayerOperators
    tol : float
        Tolerance of the tolerance-ESS.
    relative : bool
        Measure ``tol`` against ``sigma_1`` of each split.
    tokens : pandas.CategoricalDtype
        From ``token_dtype(ops.tokens)``, shared by all layers of a table.
    splits : list of int, optional
        Which splits (all by default).
    progress : callable, optional
        Called with the number of channels done after each chunk of channels.
    chunks : int, default 1
        Compute the spectra in this many groups of channels (progress steps within
        the layer); the values are the same (each channel is computed on its own).
    **kwargs
        Passed to ``ops.spectra``.

    Returns
    -------
    pandas.DataFrame
        ``C * len(splits)`` rows with the columns ``COLUMNS``.
    """
    L, C = ops.length, ops.num_channels
    split = np.arange(1, L, dtype=np.int32) if splits is None else np.asarray(splits, np.int32)
    step = max(1, -(-C // max(1, int(chunks))))
    tol_parts, ent_parts = [], []
    for start in range(0, C, step):
        stop = min(C, start + step)
        s = ops.spectra(slice(start, stop), splits=splits, **kwargs)
        tol_parts.append(tolerance_ess(s, tol, relative=relative).cpu().numpy())
        ent_parts.append(entropy_ess(s).cpu().numpy())
        if progress is not None:
            progress(stop - start)
    tol_ess = np.concatenate(tol_parts)
    ent = np.concatenate(ent_parts)
    n = len(split)
    codes = tokens.categories.get_indexer([ops.tokens[i - 1] for i in split])
    tss = ops.tss.cpu().numpy()[:, split - 1]
    bound = ess_bound(L).numpy()[split - 1]
    return pd.DataFrame(
        {
            "layer": np.full(C * n, ops.layer, dtype=np.int32),
            "mixer": np.full(C * n, ops.mixer, dtype=object),
            "kind": np.full(C * n, ops.kind, dtype=object),
            "channel": np.repeat(np.arange(C, dtype=np.int32), n),
            "split": np.tile(split, C),
            "token": pd.Categorical.from_codes(np.tile(codes, C), dtype=tokens),
            "tolerance_ess": tol_ess.reshape(-1).astype(np.int32),
            "entropy_ess": ent.reshape(-1).astype(np.float64),
            "bound": np.tile(bound.astype(np.int32), C),
            "tss": tss.reshape(-1).astype(np.int64),
        },
        columns=list(COLUMNS),
    )


def join_layers(
    frames, enc, *, model: str, tol: float, relative: bool, splits, channel_label: dict
) -> pd.DataFrame:
    """Concatenate per-mixer frames into the ESS table and record how it was made.

    ``mixer`` and ``kind`` become categoricals (in order of appearance); ``attrs``
    holds ``model``, ``tol``, ``relative``, ``tokens``, ``token_ids``, ``splits`` and
    ``channel_label`` (what one channel is called, per kind).
    """
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table = table[list(COLUMNS)]
    for column in ("mixer", "kind"):
        categories = list(dict.fromkeys(table[column]))
        table[column] = pd.Categorical(table[column], categories=categories)
    table.attrs.update(
        {
            "model": model,
            "tol": float(tol),
            "relative": bool(relative),
            "tokens": list(enc.tokens),
            "token_ids": enc.ids.tolist(),
            "splits": list(splits),
            "channel_label": channel_label,
        }
    )
    return table
