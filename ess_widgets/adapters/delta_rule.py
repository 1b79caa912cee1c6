"""Delta-rule layers: Gated DeltaNet (Qwen3-Next, OLMo Hybrid) and Kimi Delta Attention
(Kimi Linear, Ling / bailing_hybrid), one operator per value head.

Both are the block's ``"linear_attention"`` mixer; their operator families (the
table's ``kind``) are ``"gated_delta_rule"`` (a decay per step and head) and
``"kimi_delta_attention"`` (a decay per step, head and key channel). The other
blocks of these hybrids hold softmax attention (gated in Qwen3-Next, MLA in Kimi
Linear and Ling), read by the attention adapter.

Convention: the operator of value head ``h`` maps the mixer's values ``v`` (after the
short convolution and its SiLU, split into heads) to the output of the delta rule
before the gated output norm (``norm`` / ``o_norm``), the output gate and
``out_proj``. All ``d_v`` value channels of a head share it (``A_t``, ``b_t``, ``c_t``
do not depend on the channel; see ``ess_widgets.operators.delta_rule``)::

    S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_(t-1) + beta_t k_t v_t^T,
    y_t = S_t^T q_t / sqrt(d_k)

with ``q``, ``k`` L2-normalised and repeated from the key heads to the value heads
(Gated DeltaNet with fewer key heads), ``alpha_t = exp(g_t)`` one per step and head
(Gated DeltaNet) or per step, head and key channel (KDA), ``beta_t`` in ``[0, 1]``
(``[0, 2]`` in OLMo Hybrid). TSS is ``d_k``.

The tensors are read from the arguments of the module-level functions the mixers
call (``torch_chunk_gated_delta_rule`` / ``torch_recurrent_gated_delta_rule``,
``chunk_kimi_delta_attention`` / ``recurrent_kimi_delta_attention``). transformers
binds those names to flash-linear-attention's kernels when it is installed and to
its PyTorch reference otherwise; either way the arguments, and so the operator, are
the same. A call this module cannot read exactly (a cache, packed sequences, its
own query scale, a kernel that computes the decay from a raw gate) raises instead of
measuring something else.
"""

from __future__ import annotations

import contextlib

import torch

from ..core import recurrence_bytes
from ..operators.base import CausalOperator
from ..operators.delta_rule import gated_delta_rule
from ._scan import recording_scan
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter

__all__ = ["GatedDeltaNetAdapter", "KimiDeltaAttentionAdapter", "l2norm"]

# Positional parameters of the chunked and the recurrent functions (both families).
_CHUNK_ARGS = ("query", "key", "value", "g", "beta", "chunk_size", "initial_state")
_RECURRENT_ARGS = ("query", "key", "value", "g", "beta", "initial_state")
# Keyword arguments of flash-linear-attention's KDA kernel that make `g` a raw gate.
_GATE_IN_KERNEL = ("use_gate_in_kernel", "A_log", "dt_bias", "lower_bound")
_L2NORM_EPS = 1e-6  # both families normalise as fla does: x / sqrt(|x|^2 + 1e-6)


def l2norm(x: torch.Tensor, eps: float = _L2NORM_EPS) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dimension, as the models' kernels do."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class _DeltaRuleAdapter(MixerAdapter):
    """Shared capture and operator of the two delta-rule kinds."""

    mixer = "linear_attention"
    channel_label = "head"
    transition = "delta"  # the cost model of estimate (DeltaTransition)
    functions: tuple[str, str] = ("", "")  # chunked, recurrent
    per_channel_decay = False

    @staticmethod
    def dims(layer: MixerLayer) -> tuple[int, int, int, int]:
        """``(key heads, value heads, d_k, d_v)`` of the mixer."""
        raise NotImplementedError

    def num_channels(self, layer: MixerLayer, config) -> int:
        return self.dims(layer)[1]

    def state_size(self, layer: MixerLayer, config) -> int:
        return self.dims(layer)[2]

    @contextlib.contextmanager
    def recording(self, layers: list[MixerLayer], store: dict):
        def on_call(layer, args):
            for name in ("initial_state", "cu_seqlens"):
                if args.get(name) is not None:
                    raise RuntimeError(
                        f"The delta rule of layer {layer.index} was called with "
                        f"`{name}` (a cache or packed sequences): run the model with "
                        "use_cache=False on one whole sequence."
                    )
            inside = [n for n in _GATE_IN_KERNEL if args.get(n) not in (None, False)]
            if inside:
                raise RuntimeError(
                    f"The delta rule of layer {layer.index} was called with {inside}: the "
                    "kernel computes the decay from a raw gate itself, and ess_widgets reads "
                    "`g` as the log-decay. This transformers version is not supported for "
                    "this model; run it on the PyTorch path."
                )
            if args.get("scale") is not None:
                raise RuntimeError(
                    f"The delta rule of layer {layer.index} was called with its own "
                    "query scale; ess_widgets reads the models' default d_k ** -0.5 only."
                )
            query = args["query"]
            if query.shape[0] != 1:
                raise RuntimeError(f"Expected a batch of one sequence, got {query.shape[0]}.")

            def first(name):
                return args[name][0].detach()

            store[layer.key] = {
                "q": first("query"),  # (L, H_k, d_k), before the L2 norm
                "k": first("key"),  # (L, H_k, d_k)
                "v": first("value"),  # (L, H_v, d_v): the operator's input
                "g": first("g"),  # (L, H_v) or (L, H_v, d_k): log-decay
                "beta": first("beta"),  # (L, H_v)
                "qk_l2norm": bool(args.get("use_qk_l2norm_in_kernel", False)),
            }

        chunked, recurrent = self.functions
        with contextlib.ExitStack() as stack:
            stack.enter_context(recording_scan(layers, chunked, _CHUNK_ARGS, on_call))
            stack.enter_context(recording_scan(layers, recurrent, _RECURRENT_ARGS, on_call))
            yield store

    @staticmethod
    def recurrence_inputs(record) -> dict[str, torch.Tensor]:
        """``q``, ``k`` ``(H_v, L, d_k)``, ``beta`` ``(H_v, L)`` and ``decay`` ``(H_v, L)``
        or ``(H_v, L, d_k)`` in float64, as the delta rule uses them.

        ``q`` and ``k`` are L2-normalised (when the model asks for it) and repeated to
        the value heads (each key head serves ``H_v / H_k`` consecutive value heads);
        ``decay = exp(g)``. The query scale is left to ``gated_delta_rule``.
        """
        f64 = torch.float64
        q, k = record["q"].to(f64), record["k"].to(f64)
        if record["qk_l2norm"]:
            q, k = l2norm(q), l2norm(k)
        H_v, H_k = record["v"].shape[-2], q.shape[-2]
        if H_v != H_k:
            q = q.repeat_interleave(H_v // H_k, dim=-2)
            k = k.repeat_interleave(H_v // H_k, dim=-2)
        return {
            "q": q.transpose(0, 1),
            "k": k.transpose(0, 1),
            "beta": record["beta"].to(f64).mT,
            "decay": torch.exp(record["g"].to(f64).transpose(0, 1)),
        }

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        x = self.recurrence_inputs(record)
        if index is not None:
            x = {name: t[index] for name, t in x.items()}
        return gated_delta_rule(x["q"], x["k"], x["beta"], x["decay"])

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        H_k, H_v, d_k, d_v = self.dims(layer)
        decay = d_k if self.per_channel_decay else 1
        capture = 4 * L * (2 * H_k * d_k + H_v * d_v + H_v * decay + H_v)
        # The model's chunked form (64 steps): float32 copies of q, k, v at the value
        # heads, chunk-by-chunk systems, and for KDA a decay mask per key channel.
        chunk = 64
        forward = 4 * H_v * L * (4 * max(d_k, d_v) + 4 * chunk + (chunk * d_k if decay > 1 else 0))
        # Spectra: q, k, b, c, beta, decay in float64, then the core's working memory
        # for the delta transitions (never L x d_k x d_k per head).
        inputs = 8 * H_v * L * (4 * d_k + 1 + decay)
        spectra = inputs + recurrence_bytes(L, d_k, H_v, transition="delta")
        return Footprint(
            capture=capture,
            peak=capture + max(forward, spectra),
            # T and the impulse states (H, d_k, L), float64.
            dense=8 * H_v * L * (L + d_k) + inputs,
        )


class GatedDeltaNetAdapter(_DeltaRuleAdapter):
    """Gated DeltaNet (Qwen3-Next, OLMo Hybrid): per value head ``(H_v, L, L)``, TSS ``d_k``."""

    name = "gated_deltanet"
    kind = "gated_delta_rule"
    functions = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule")

    @staticmethod
    def dims(layer: MixerLayer) -> tuple[int, int, int, int]:
        m = layer.module
        return int(m.num_k_heads), int(m.num_v_heads), int(m.head_k_dim), int(m.head_v_dim)


class KimiDeltaAttentionAdapter(_DeltaRuleAdapter):
    """Kimi Delta Attention (Kimi Linear, Ling): per head ``(H, L, L)``, a decay per key
    channel, TSS ``d_k``."""

    name = "kimi_delta_attention"
    kind = "kimi_delta_attention"
    functions = ("chunk_kimi_delta_attention", "recurrent_kimi_delta_attention")
    per_channel_decay = True

    @staticmethod
    def dims(layer: MixerLayer) -> tuple[int, int, int, int]:
        m = layer.module
        H, d = int(m.num_heads), int(m.head_dim)
        return H, H, d, d


register_adapter(
    GatedDeltaNetAdapter(), classes=("Qwen3NextGatedDeltaNet", "OlmoHybridGatedDeltaNet")
)
register_adapter(
    KimiDeltaAttentionAdapter(),
    classes=("KimiLinearDeltaAttention", "BailingHybridDeltaAttention"),
)
register_family("qwen3_next", "Qwen3-Next", "hybrid")
register_family("olmo_hybrid", "OLMo Hybrid", "hybrid")
register_family("kimi_linear", "Kimi Linear", "hybrid")
register_family("bailing_hybrid", "Ling (bailing_hybrid)", "hybrid")
