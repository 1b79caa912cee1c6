"""ESS of the shipped MQAR models: accuracy, ESS per layer, TSS, and per-kv ratios.

Conventions (docs/definitions.md, aggregations):

- tolerance-ESS uses a *relative* tolerance ``TOL = 1e-2`` (a singular value counts
  when it exceeds 1e-2 of the largest one of its split); entropy-ESS needs none.
- "average ESS of a layer": mean over channels (LA/WLA/GLA/SA: the layer's one head;
  S6: its ``d_inner`` channels), over the ``L - 1`` splits, and over the sequences.
- TSS of a layer, per channel: ``d_k`` (LA/WLA/GLA), ``d_state`` (S6), and for SA the
  mean over splits of the cache size ``i`` (``L / 2``). ``total_*`` columns multiply
  by the channel count (the "total ESS of a layer": sum over channels).
- A model's ESS and TSS: the mean over its layers; ``*_per_kv`` divides by the
  number of key-value pairs.
- Regime: ``saturated`` when the tolerance-ESS of some layer reaches
  ``SATURATION = 0.8`` of its TSS; ``collapsed`` when every layer stays below
  ``COLLAPSE = 0.5`` of its TSS while the accuracy is below ``0.9``; else ``-``.
"""

from __future__ import annotations

import torch

from ..core import entropy_ess, ess_bound, tolerance_ess
from ..tasks import mqar
from .model import MQARModel

__all__ = ["TOL", "accuracy", "layer_ess", "measure_model", "measure_batch", "ess_curve"]

TOL = 1e-2
SATURATION = 0.8
COLLAPSE = 0.5
COLLAPSE_ACCURACY = 0.9
ACCURACY_SEQUENCES, ESS_SEQUENCES, FRESH_SEED = 256, 32, 20_000


@torch.no_grad()
def accuracy(model: MQARModel, batch) -> float:
    """Fraction of query positions where the argmax prediction is the right value."""
    pred = model(batch.inputs).argmax(-1)
    mask = batch.query_mask
    return float((pred[mask] == batch.targets[mask]).double().mean())


@torch.no_grad()
def layer_ess(model: MQARModel, inputs: torch.Tensor, tol: float = TOL) -> list[dict]:
    """Per layer, ESS per split averaged over sequences and channels.

    Parameters
    ----------
    model : MQARModel
    inputs : torch.LongTensor, shape (B, L)
    tol : float
        Relative tolerance of tolerance-ESS.

    Returns
    -------
    list of dict, one per layer
        ``tolerance``, ``entropy``, ``tss``: float64 ``(L-1,)`` curves;
        ``channels``: operators per sequence (1 head, or ``d_inner``).
    """
    out = []
    for op in model.layer_operators(inputs):
        s = op.spectra()  # float64; (B, L-1, K) or (B, D, L-1, K)
        t = tolerance_ess(s, tol, relative=True).double()
        e = entropy_ess(s)
        dims = tuple(range(t.ndim - 1))
        out.append(
            {
                "tolerance": t.mean(dims),
                "entropy": e.mean(dims),
                "tss": op.tss.double().expand(t.shape[-1]),
                "channels": model.num_channels,
            }
        )
    return out


def measure_model(
    model: MQARModel,
    *,
    num_pairs: int,
    seq_len: int,
    vocab_size: int,
    seed: int = FRESH_SEED,
    accuracy_sequences: int = ACCURACY_SEQUENCES,
    ess_sequences: int = ESS_SEQUENCES,
    tol: float = TOL,
) -> dict:
    """Accuracy and ESS of one model on fresh MQAR data (one flat row of results).

    Accuracy is measured on ``accuracy_sequences`` sequences of ``mqar(seed=seed)``,
    ESS on the first ``ess_sequences`` of them.
    """
    batch = mqar(
        accuracy_sequences,
        num_pairs=num_pairs,
        seq_len=seq_len,
        vocab_size=vocab_size,
        seed=seed,
    )
    return measure_batch(model, batch, num_items=num_pairs, ess_sequences=ess_sequences, tol=tol)


def measure_batch(
    model: MQARModel, batch, *, num_items: int, ess_sequences: int = ESS_SEQUENCES, tol: float = TOL
) -> dict:
    """``measure_model`` on a given batch of any task (``ess_widgets.tasks``).

    Accuracy over the positions with a target (``batch.query_mask``), ESS on the
    first ``ess_sequences`` sequences; ``*_per_kv`` columns divide by ``num_items``
    (MQAR's pairs, or the tokens to copy / compress).
    """
    num_pairs = num_items
    row = {"accuracy": accuracy(model, batch)}
    layers = layer_ess(model, batch.inputs[:ess_sequences], tol)
    ratios = []
    for n, lay in enumerate(layers):
        tss = float(lay["tss"].mean())
        row[f"ess_tol_l{n}"] = float(lay["tolerance"].mean())
        row[f"ess_ent_l{n}"] = float(lay["entropy"].mean())
        ratios.append(row[f"ess_tol_l{n}"] / tss)
    row["tss"] = float(sum(lay["tss"].mean() for lay in layers) / len(layers))
    row["ess_tol"] = sum(row[f"ess_tol_l{n}"] for n in range(len(layers))) / len(layers)
    row["ess_ent"] = sum(row[f"ess_ent_l{n}"] for n in range(len(layers))) / len(layers)
    row["channels"] = layers[0]["channels"]
    row["total_tss"] = row["tss"] * row["channels"]
    row["total_ess_tol"] = row["ess_tol"] * row["channels"]
    row["total_ess_ent"] = row["ess_ent"] * row["channels"]
    row["tss_per_kv"] = row["tss"] / num_pairs
    row["ess_tol_per_kv"] = row["ess_tol"] / num_pairs
    row["ess_ent_per_kv"] = row["ess_ent"] / num_pairs
    row["utilization"] = max(ratios)
    if max(ratios) >= SATURATION:
        row["regime"] = "saturated"
    elif max(ratios) < COLLAPSE and row["accuracy"] < COLLAPSE_ACCURACY:
        row["regime"] = "collapsed"
    else:
        row["regime"] = "-"
    return row


@torch.no_grad()
def ess_curve(model: MQARModel, inputs: torch.Tensor, layer: int, tol: float = TOL) -> dict:
    """Token-wise ESS of one layer on one sequence (``inputs`` ``(L,)`` or ``(1, L)``).

    Returns ``split`` (1..L-1), ``tolerance`` and ``entropy`` (mean over channels),
    ``tss`` and ``bound`` (``min(i, L - i)``), each a list, ready for a DataFrame.
    """
    ids = inputs.reshape(1, -1)
    lay = layer_ess(model, ids, tol)[layer]
    L = ids.shape[-1]
    return {
        "split": list(range(1, L)),
        "tolerance": lay["tolerance"].tolist(),
        "entropy": lay["entropy"].tolist(),
        "tss": lay["tss"].tolist(),
        "bound": ess_bound(L).tolist(),
    }
