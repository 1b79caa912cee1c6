"""RWKV-4 layers: one WKV operator per channel of the time-mixing block.

The time-mixing block (``RwkvSelfAttention``) mixes each token with the previous
one, projects keys ``k``, values ``v`` and the receptance ``r``, runs WKV per
channel and multiplies by ``sigmoid(r)`` before its output projection::

    wkv_t = (sum_{j<t} e^(w (t-1-j) + k_j) v_j + e^(u + k_t) v_t) / Z_t

with ``w = -exp(time_decay)`` and the bonus ``u = time_first`` (see
``ess_widgets.operators.wkv4``). Convention: the operator maps the values ``v``
(after the token shift and the value projection) to the WKV output, before the
receptance gate and the output projection. The diagonal bonus is part of ``T`` but
never of a split block; TSS 1 per channel.

``time_decay``, ``time_first``, ``key`` and ``value`` are read from the arguments of
the module-level ``rwkv_linear_attention``, looked up at call time, so the CPU loop
and the CUDA kernel are seen alike. Both compute with float32 keys (the CPU loop
casts them); the operator does the same.
"""

from __future__ import annotations

import torch

from ..operators.base import CausalOperator
from ..operators.wkv import wkv4
from ._scan import recording_scan
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter

__all__ = ["RwkvAdapter"]

_ARGS = ("time_decay", "time_first", "key", "value", "state", "return_state")
_CHUNK_BYTES = 256 * 2**20  # working memory of recurrence_spectra per chunk


class RwkvAdapter(MixerAdapter):
    """Per-channel WKV-4 operators ``(D, L, L)``, TSS 1."""

    name = "wkv"
    mixer = "wkv"
    kind = "wkv4"
    channel_label = "channel"

    def state_size(self, layer: MixerLayer, config) -> int:
        return 2  # the realization's (past numerator, current input); rank <= 1

    def num_channels(self, layer: MixerLayer, config) -> int:
        return int(layer.module.attention_hidden_size)

    def recording(self, layers: list[MixerLayer], store: dict):
        def on_call(layer, args):
            if args.get("state") is not None:
                raise RuntimeError(
                    "RWKV's WKV was called with a state (a cache): run the model with "
                    "use_cache=False on the whole sequence."
                )
            store[layer.key] = {
                "time_decay": args["time_decay"].detach(),  # (D,)
                "time_first": args["time_first"].detach(),  # (D,)
                "key": args["key"].detach()[0],  # (L, D)
                "value": args["value"].detach()[0],  # (L, D): the operator's input
            }

        return recording_scan(layers, "rwkv_linear_attention", _ARGS, on_call)

    @staticmethod
    def parameters(record) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log_decay (D,)``, ``bonus (D,)``, ``k (L, D)`` in float64, as WKV uses them."""
        f64 = torch.float64
        log_decay = -torch.exp(record["time_decay"].to(f64))
        k = record["key"].float().to(f64)  # WKV reads float32 keys
        return log_decay, record["time_first"].to(f64), k

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        # Tables build a layer's operators a few channels at a time: convert once.
        if "_parameters" not in record:
            record["_parameters"] = self.parameters(record)
        log_decay, bonus, k = record["_parameters"]
        if index is not None:
            log_decay, bonus, k = log_decay[index], bonus[index], k[:, index]
        return wkv4(log_decay, bonus, k)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        D = self.num_channels(layer, config)
        capture = 4 * 2 * L * D
        # The recurrence (a: D x L x 2 x 2, b, c, log-sums) in float64 and the factors.
        spectra = 8 * D * L * (4 + 2 + 2 + 3) + 2 * 8 * D * L * 4 + _CHUNK_BYTES
        forward = 4 * 6 * L * D  # the WKV loop's states and the projections
        return Footprint(
            capture=capture,
            peak=capture + max(forward, spectra),
            # logits, their softmax and masks: (D, L, L) each.
            dense=3 * 8 * D * L * L,
        )


register_adapter(RwkvAdapter(), classes=("RwkvSelfAttention",))
register_family("rwkv", "RWKV", "recurrent")
