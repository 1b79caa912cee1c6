"""RecurrentGemma (Griffin) recurrent layers: one RG-LRU operator per channel.

A recurrent block projects its input twice: a gate branch ``gelu(W_y x)`` and a
value branch ``W_x x`` that passes through a causal depthwise convolution of width 4
and then the RG-LRU (``RecurrentGemmaRglru``)::

    h_t = a_t h_(t-1) + sqrt(1 - a_t^2) i_t x_t,   log a_t = -8 r_t softplus(Lambda)

with the recurrence gate ``r_t`` and the input gate ``i_t`` (block-diagonal linear
maps of ``x_t`` and a sigmoid) and a reset at the first position. Convention: the
operator maps the RG-LRU's input ``x`` (after the short convolution) to ``h``,
before the gate branch multiplies it and before the output projection. TSS 1 per
channel. RecurrentGemma's local attention layers are sliding-window attention
(``adapters.attention``).

The RG-LRU calls no module-level function, so the adapter hooks the module,
recomputes both gates in float64 from its input and checks the resulting ``h``
against the module's output (``adapters._recompute``). The model accumulates the
scan in float32 whatever its dtype, so a float64 model agrees to about 1e-7 (relative).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..operators.base import CausalOperator
from ..operators.rglru import rg_lru, rg_lru_ref
from ._recompute import check_recomputed
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter, hooks_held

__all__ = ["RGLRUAdapter"]

_CHUNK_BYTES = 256 * 2**20  # working memory of recurrence_spectra per chunk


def _gate(module, x: torch.Tensor, weight: str, bias: str) -> torch.Tensor:
    """``sigmoid`` of the block-diagonal map of ``x`` ``(L, D)``, in float64."""
    H, width = module.num_attention_heads, module.block_width
    blocks = x.reshape(-1, H, width).transpose(0, 1)  # (H, L, width)
    w = getattr(module, weight).to(torch.float64)  # (H, width, width)
    b = getattr(module, bias).to(torch.float64)  # (H, width)
    out = torch.baddbmm(b[:, None, :], blocks, w)  # (H, L, width)
    return torch.sigmoid(out.transpose(0, 1).reshape(x.shape))


def gates(module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_a (L, D)`` and ``input_gate (L, D)`` of the RG-LRU on its input ``x``."""
    x = x.to(torch.float64)
    recurrence_gate = _gate(module, x, "recurrent_gate_weight", "recurrent_gate_bias")
    input_gate = _gate(module, x, "input_gate_weight", "input_gate_bias")
    param = F.softplus(module.recurrent_param.to(torch.float64))
    return -8.0 * recurrence_gate * param, input_gate


class RGLRUAdapter(MixerAdapter):
    """Per-channel RG-LRU operators ``(D, L, L)``, TSS 1."""

    name = "rg_lru"
    mixer = "rg_lru"
    kind = "rg_lru"
    channel_label = "channel"

    def state_size(self, layer: MixerLayer, config) -> int:
        return 1

    def num_channels(self, layer: MixerLayer, config) -> int:
        return int(layer.module.recurrent_param.shape[0])

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        def hook_for(layer):
            def hook(module, args, kwargs, output):
                x = (args[0] if args else kwargs["activations"]).detach()
                positions = args[1] if len(args) > 1 else kwargs.get("position_ids")
                L = x.shape[1]
                if positions is not None and not torch.equal(
                    positions[0].cpu(), torch.arange(L, dtype=positions.dtype)
                ):
                    raise RuntimeError(
                        f"The RG-LRU of layer {layer.index} ran on positions that do not "
                        "start at 0: run the model on the whole sequence, without a cache."
                    )
                log_a, input_gate = gates(module, x[0])
                h = rg_lru_ref(x[0].to(torch.float64), log_a, input_gate)
                check_recomputed("RG-LRU", layer.index, h, output[0])
                store[layer.key] = {
                    "x": x[0],  # (L, D): the operator's input
                    "log_a": log_a,  # (L, D), float64
                    "input_gate": input_gate,  # (L, D), float64
                }

            return hook

        handles = (
            layer.module.register_forward_hook(hook_for(layer), with_kwargs=True)
            for layer in layers
        )
        with hooks_held(handles, store):
            yield store

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        log_a, input_gate = record["log_a"], record["input_gate"]
        if index is not None:
            log_a, input_gate = log_a[:, index], input_gate[:, index]
        return rg_lru(log_a, input_gate)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        D = self.num_channels(layer, config)
        capture = 4 * L * D + 2 * 8 * L * D
        check = 6 * 8 * L * D  # the gates and the recomputed scan
        spectra = 3 * 8 * D * L + 2 * 8 * D * L + _CHUNK_BYTES
        return Footprint(
            capture=capture,
            peak=capture + max(check, spectra),
            # segment sums, their mask and T: (D, L, L) each.
            dense=3 * 8 * D * L * L,
        )


register_adapter(RGLRUAdapter(), classes=("RecurrentGemmaRglru",))
register_family("recurrent_gemma", "RecurrentGemma", "hybrid")
