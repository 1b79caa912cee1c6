"""LFM2 / LFM3 short-convolution layers: one gated-FIR operator per channel.

The mixer (``Lfm2ShortConv``, ``Lfm3ShortConv``) projects its input to ``B``, ``C``
and ``x`` (``in_proj``), filters ``B * x`` with a causal depthwise convolution of
width ``K`` (``conv_L_cache``) and multiplies by ``C`` before ``out_proj``::

    y_t = C_t (sum_{m<K} h[m] B_(t-m) x_(t-m) + bias)

Convention: the gated convolution is the mixer itself; the operator maps ``x`` (the
third chunk of ``in_proj``'s output) to ``y``, the input of ``out_proj``:
``T[t, j] = C_t h[t - j] B_j`` for ``0 <= t - j < K``, TSS ``K - 1`` per channel
(``ess_widgets.operators.gated_short_convolution``). A convolution bias
(``conv_bias=True``) adds ``C_t * bias``, which does not depend on ``x`` and is no
part of ``T``. The attention layers of these models (LFM3's sliding-window layers
included) are read as attention (``adapters.attention``).

The convolution runs through ``causal_conv1d_fn`` (a hub kernel where one is
installed), so the adapter hooks ``in_proj`` (its output) and ``out_proj`` (its
input) and checks ``T x`` against what the model produced (``adapters._recompute``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..operators.base import CausalOperator
from ..operators.short_convolution import gated_short_convolution
from ._recompute import check_recomputed
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter, hooks_held

__all__ = ["ShortConvAdapter"]

_CHUNK_BYTES = 256 * 2**20  # working memory of recurrence_spectra per chunk


def _kernel(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The filters ``h (D, K)`` (``h[:, 0]`` on the diagonal) and the bias, float64."""
    conv = module.conv
    h = conv.weight.detach().to(torch.float64)[:, 0].flip(-1)  # Conv1d correlates
    bias = None if conv.bias is None else conv.bias.detach().to(torch.float64)
    return h, bias


def gated_convolution(B, C, x, h, bias) -> torch.Tensor:
    """``y (L, D)`` of the gated convolution, by ``conv1d`` (not through ``T``)."""
    K = h.shape[-1]
    weight = h.flip(-1)[:, None, :]  # back to Conv1d's (D, 1, K)
    out = F.conv1d((B * x).mT[None], weight, padding=K - 1, groups=h.shape[0])
    out = out[0, :, : x.shape[0]].mT
    if bias is not None:
        out = out + bias
    return C * out


class ShortConvAdapter(MixerAdapter):
    """Per-channel gated short-convolution operators ``(D, L, L)``, TSS ``K - 1``."""

    name = "short_conv"
    mixer = "conv"
    kind = "gated_short_convolution"
    channel_label = "channel"

    def state_size(self, layer: MixerLayer, config) -> int:
        return int(layer.module.conv.weight.shape[-1])  # the shift register: K inputs

    def num_channels(self, layer: MixerLayer, config) -> int:
        return int(layer.module.conv.weight.shape[0])

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        def hooks_for(layer):
            seen = {}

            def projections(module, args, output):
                seen["BCx"] = output.detach()[0]  # (L, 3D)

            def result(module, args):
                BCx = seen.pop("BCx", None)
                if BCx is None:
                    raise RuntimeError(
                        f"The short convolution of layer {layer.index} ran without its "
                        "in_proj: this transformers version computes it differently."
                    )
                D = BCx.shape[-1] // 3
                B, C, x = (BCx[:, k * D : (k + 1) * D].to(torch.float64) for k in range(3))
                h, bias = _kernel(layer.module)
                y = args[0].detach()[0]
                check_recomputed(
                    "short convolution", layer.index, gated_convolution(B, C, x, h, bias), y
                )
                store[layer.key] = {
                    "x": BCx[:, 2 * D :],  # (L, D): the operator's input
                    "B": B,  # (L, D), float64
                    "C": C,  # (L, D), float64
                    "h": h,  # (D, K), float64
                    "bias": bias,  # (D,) or None
                }

            return projections, result

        def handles():
            for layer in layers:
                projections, result = hooks_for(layer)
                yield layer.module.in_proj.register_forward_hook(projections)
                yield layer.module.out_proj.register_forward_pre_hook(result)

        with hooks_held(handles(), store):
            yield store

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        h, B, C = record["h"], record["B"], record["C"]
        if index is not None:
            h, B, C = h[index], B[:, index], C[:, index]
        return gated_short_convolution(h, B, C)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        D = self.num_channels(layer, config)
        K = int(layer.module.conv.weight.shape[-1])
        m = min(K, L)
        capture = 4 * L * D + 2 * 8 * L * D
        check = 4 * 8 * L * D
        # a is an expanded view; b, c (D, L, m) and the square-root factors (D, L, m, m).
        spectra = 2 * 8 * D * L * m + 8 * D * L * m * m + _CHUNK_BYTES
        return Footprint(
            capture=capture,
            peak=capture + max(check, spectra),
            # the Toeplitz filters and T: (D, L, L) each.
            dense=2 * 8 * D * L * L,
        )


register_adapter(ShortConvAdapter(), classes=("Lfm2ShortConv", "Lfm3ShortConv"))
register_family("lfm2", "LFM2", "hybrid")
register_family("lfm3", "LFM3", "hybrid")
