"""MiniMax lightning-attention layers: one weighted-linear-attention operator per head.

``MiniMaxLightningAttention`` projects ``q, k, v`` (``qkv_proj`` and the activation),
then runs linear attention with a fixed decay per head, block by block::

    S_t = lambda_h S_(t-1) + k_t v_t^T,    y_t = S_t^T q_t,    lambda_h = exp(-slope_h)

(``slope_rate``: ALiBi-like slopes scaled down with depth), i.e.
``T[i, j] = lambda_h^(i-j) q_i . k_j``: no normalizer inside. Convention: the operator
maps the values ``v`` (after the activation) to the attention output, before the
RMSNorm over all heads, the sigmoid output gate and ``out_proj``; TSS ``head_dim``
(``ess_widgets.operators.weighted_linear_attention``). MiniMax's softmax layers are
attention (``adapters.attention``), with ``config.sliding_window`` when set.

The module returns ``(output, KV state)`` and transformers lists it among the
modules that record "attentions": the KV state is no attention map, and
``architectures.find_layers`` gives these modules to this adapter, never to the
attention one. The block loop calls no module-level function, so the adapter hooks
``qkv_proj`` (its output) and ``norm`` (its input) and checks ``T v`` against what
the model produced (``adapters._recompute``). The model's per-block decay buffers
are computed in float32, so even a float64 model agrees with ``exp(-slope_h)`` only to
about 1e-7 (relative).
"""

from __future__ import annotations

import contextlib

import torch

from ..operators.base import CausalOperator
from ..operators.linear_attention import linear_attention_ref, weighted_linear_attention
from ._recompute import check_recomputed
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter, hooks_held

__all__ = ["LightningAdapter"]

_CHUNK_BYTES = 256 * 2**20  # working memory of recurrence_spectra per chunk


def _dims(layer: MixerLayer) -> tuple[int, int]:
    """``(heads, head_dim)``."""
    return int(layer.module.num_attention_heads), int(layer.module.head_dim)


class LightningAdapter(MixerAdapter):
    """Per-head lightning-attention operators ``(H, L, L)``, TSS ``head_dim``."""

    name = "lightning"
    mixer = "linear_attention"
    kind = "weighted_linear_attention"
    channel_label = "head"

    def state_size(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[1]

    def num_channels(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[0]

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        def hooks_for(layer):
            H, d = _dims(layer)
            seen = {}

            def projections(module, args, output):
                qkv = layer.module.act_fn(output.detach()[0])  # (L, H * 3d)
                seen["qkv"] = qkv.reshape(qkv.shape[0], H, 3 * d).transpose(0, 1)

            def result(module, args):
                qkv = seen.pop("qkv", None)
                if qkv is None:
                    raise RuntimeError(
                        f"The lightning attention of layer {layer.index} ran without its "
                        "qkv_proj: this transformers version computes it differently."
                    )
                q, k, v = (qkv[..., n * d : (n + 1) * d].to(torch.float64) for n in range(3))
                decay = torch.exp(-layer.module.slope_rate.detach().to(torch.float64))  # (H,1,1)
                y = args[0].detach()[0]  # (L, H * d)
                L = y.shape[0]
                recomputed = linear_attention_ref(q, k, v, decay)  # (H, L, d)
                check_recomputed(
                    "lightning attention", layer.index, recomputed.transpose(0, 1).reshape(L, -1), y
                )
                store[layer.key] = {
                    "q": q,  # (H, L, d), float64
                    "k": k,  # (H, L, d), float64
                    "v": qkv[..., 2 * d :],  # (H, L, d): the operator's input
                    "decay": decay[:, :, 0],  # (H, 1)
                }

            return projections, result

        def handles():
            for layer in layers:
                projections, result = hooks_for(layer)
                yield layer.module.qkv_proj.register_forward_hook(projections)
                yield layer.module.norm.register_forward_pre_hook(result)

        with hooks_held(handles(), store):
            yield store

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        q, k, decay = record["q"], record["k"], record["decay"]
        if index is not None:
            q, k, decay = q[index], k[index], decay[index]
        return weighted_linear_attention(q, k, decay)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        H, d = _dims(layer)
        capture = 4 * H * L * d + 2 * 8 * H * L * d
        check = 8 * (H * d * d + 2 * H * L * d)  # the reference loop's state and output
        spectra = 3 * 8 * H * L * d + 8 * H * L * d * d + _CHUNK_BYTES
        return Footprint(
            capture=capture,
            peak=capture + max(check, spectra),
            # q k^T, the segment sums, the decay mask and T: (H, L, L) each.
            dense=4 * 8 * H * L * L,
        )


register_adapter(LightningAdapter(), classes=("MiniMaxLightningAttention",))
register_family("minimax", "MiniMax", "hybrid")
