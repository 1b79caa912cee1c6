"""Softmax-attention layers: the model's own attention probabilities, per query head.

With its scores fixed, a head's output is ``y = T v`` with ``T`` the causal
attention map, shared by the head's value channels. The map is read from the
attention module's forward output (``(attn_output, attn_weights)``), which
transformers fills only under eager attention: the handle switches the model to
eager attention. Grouped-query attention shares keys and values between query
heads, but every query head has its own map, so ``C = num_attention_heads``.
"""

from __future__ import annotations

import contextlib

import torch

from ..operators.attention import attention_operator
from ..operators.base import CausalOperator
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter, hooks_held

__all__ = ["AttentionAdapter"]


def _num_heads(config) -> int:
    for key in ("num_attention_heads", "n_head"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(config).__name__} names no number of attention heads.")


class AttentionAdapter(MixerAdapter):
    """Attention maps ``(H, L, L)`` per layer, TSS ``i`` (or ``min(i, w)``)."""

    name = "attention"
    mixer = "attention"
    kind = "softmax_attention"
    channel_label = "head"

    def num_channels(self, layer: MixerLayer, config) -> int:
        return _num_heads(config)

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        def hook_for(layer):
            def hook(module, args, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise RuntimeError(
                        f"The attention module of layer {layer.index} "
                        f"({type(module).__name__}) returned no attention weights. They "
                        "exist only under eager attention: call "
                        "model.set_attn_implementation('eager') or load the model with "
                        "attn_implementation='eager'."
                    )
                # Batch of one; keep the model's precision (float32 for float32 models).
                store[layer.key] = {"weights": weights[0].detach()}

            return hook

        handles = (layer.module.register_forward_hook(hook_for(layer)) for layer in layers)
        with hooks_held(handles, store):
            yield store

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        weights = record["weights"] if index is None else record["weights"][index]
        if weights.dtype in (torch.float16, torch.bfloat16):
            weights = weights.float()
        return attention_operator(weights, window=layer.window)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        H = _num_heads(config)
        maps = H * L * L
        capture = 4 * maps
        # The forward pass holds scores and probabilities (float32); the spectra work
        # on a float64 copy with Gram matrices of up to half its size per worker.
        forward = 3 * 4 * maps
        spectra = 3 * 8 * maps
        return Footprint(capture=capture, peak=capture + max(forward, spectra), dense=capture)


register_adapter(AttentionAdapter())
for _model_type, _name in (
    ("gpt2", "GPT-2"),
    ("llama", "Llama"),
    ("qwen2", "Qwen2"),
    ("mistral", "Mistral"),
    ("phi", "Phi"),
    ("gpt_neox", "GPT-NeoX"),
    ("gemma", "Gemma"),
):
    register_family(_model_type, _name, "attention")
