"""xLSTM (xLSTM-7b and relatives) layers: one mLSTM operator per head.

Each block's ``xLSTMLayer`` projects ``q, k, v``, the input-gate and forget-gate
pre-activations (soft-capped), and hands them to ``xLSTMBackend``, whose kernels
(chunkwise, then step by step for the remainder) compute per head::

    C_t = f_t C_(t-1) + e^(i_t) k_t v_t^T,   n_t = f_t n_(t-1) + e^(i_t) k_t
    h_t = C_t^T q~_t / (max(|q~_t . n_t|, 1) + eps e^(m_t))

(``ess_widgets.operators.mlstm``: ``f_t = sigmoid``, ``m_t`` the stabilizer the
kernels keep). Convention: the operator maps the values ``v`` to the backend's
output ``h``, normalizer included (it rescales rows: same rank, other singular
values), before the per-head layer norm, the output gate and ``out_proj``. TSS:
the query/key head dimension.

The backend binds its kernels with ``functools.partial`` when it is built, so
patching module attributes would miss them; a forward hook with keyword arguments
on ``xLSTMBackend`` sees ``query``, ``key``, ``value``, ``igate`` and ``fgate``, and
the adapter checks the operator's output against the backend's
(``adapters._recompute``). With the external ``xlstm`` package installed,
transformers uses that package's blocks instead, which this adapter does not read.
The step-by-step kernel keeps its state in ``config.inference_state_dtype`` (float32
by default), so a float64 model agrees with the operator to about 1e-7 (relative)
past the last whole chunk.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from ..operators.base import CausalOperator
from ..operators.mlstm import mlstm, mlstm_ref
from ._recompute import check_recomputed
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter, hooks_held

__all__ = ["MLSTMAdapter"]

_CHUNK_BYTES = 256 * 2**20  # working memory of recurrence_spectra per chunk
_NAMES = ("query", "key", "value", "igate", "fgate", "c_initial", "n_initial", "m_initial")


def _dims(layer: MixerLayer) -> tuple[int, int, int]:
    """``(heads, qk head dim, v head dim)``."""
    config = layer.module.config
    H = int(config.num_heads)
    qk = int(config.hidden_size * config.qk_dim_factor) // H
    v = int(config.hidden_size * config.v_dim_factor) // H
    return H, qk, v


class MLSTMAdapter(MixerAdapter):
    """Per-head mLSTM operators ``(H, L, L)``, TSS the query/key head dimension."""

    name = "mlstm"
    mixer = "mlstm"
    kind = "mlstm"
    channel_label = "head"

    def state_size(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[1]

    def num_channels(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[0]

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        for layer in layers:
            module = sys.modules[type(layer.module).__module__]
            if getattr(module, "external_xlstm", False):
                raise RuntimeError(
                    "transformers runs this xLSTM through the external `xlstm` package, whose "
                    "kernels ess_widgets does not read. Uninstall `xlstm` to use "
                    "transformers' own PyTorch implementation."
                )

        def hook_for(layer):
            def hook(module, args, kwargs, output):
                given = dict(zip(_NAMES, args))
                given.update(kwargs)
                if given.get("c_initial") is not None:
                    raise RuntimeError(
                        "The mLSTM was called with an initial state (a cache): run the model "
                        "with use_cache=False on the whole sequence."
                    )
                f64 = torch.float64
                q, k, v = (given[n].detach()[0] for n in ("query", "key", "value"))
                igate, fgate = given["igate"].detach()[0], given["fgate"].detach()[0]
                eps = float(module.config.eps)
                h = output[0] if isinstance(output, tuple) else output
                recomputed = mlstm_ref(
                    q.to(f64), k.to(f64), v.to(f64), igate.to(f64), fgate.to(f64), eps=eps
                )
                check_recomputed("mLSTM", layer.index, recomputed, h.detach()[0])
                store[layer.key] = {
                    "q": q,  # (H, L, d_qk)
                    "k": k,  # (H, L, d_qk)
                    "v": v,  # (H, L, d_v): the operator's input
                    "igate": igate,  # (H, L), pre-activation
                    "fgate": fgate,  # (H, L), pre-activation
                    "eps": eps,
                }

            return hook

        handles = (
            layer.module.register_forward_hook(hook_for(layer), with_kwargs=True)
            for layer in layers
        )
        with hooks_held(handles, store):
            yield store

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        f64 = torch.float64
        q, k = record["q"].to(f64), record["k"].to(f64)
        igate, fgate = record["igate"].to(f64), record["fgate"].to(f64)
        if index is not None:
            q, k, igate, fgate = q[index], k[index], igate[index], fgate[index]
        return mlstm(q, k, igate, fgate, eps=record["eps"])

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        H, qk, v = _dims(layer)
        capture = 4 * H * L * (2 * qk + v + 2)
        check = 8 * (H * qk * v + H * L * v)  # the reference loop's memory and output
        spectra = 4 * 8 * H * L * qk + 8 * H * L * qk * qk + _CHUNK_BYTES
        return Footprint(
            capture=capture,
            peak=capture + max(check, spectra),
            # weights, q k^T and T: (H, L, L) each.
            dense=3 * 8 * H * L * L,
        )


register_adapter(MLSTMAdapter(), classes=("xLSTMBackend",))
register_family("xlstm", "xLSTM", "recurrent")
