"""Mamba, FalconMamba (and Jamba's Mamba) layers: one selective-SSM operator per channel.

The mixer computes, per channel ``c`` of ``d_inner`` (after in_proj, the causal
convolution and its activation, which give the SSM input ``u``)::

    x_t = exp(dt_t[c] A[c]) x_(t-1) + dt_t[c] B_t u_t[c],   y_t[c] = C_t . x_t

then adds ``D[c] u_t[c]`` and multiplies by the gate ``silu(z_t[c])``. The operator
``T`` here is the map ``u -> y`` of the scan alone: it ends before the feed-through
``D u`` (which never enters ESS) and before the gating. ``dt`` (after its bias and
softplus), ``A = -exp(A_log)``, ``B`` and ``C`` are read from the arguments of the
module-level ``mamba_selective_scan`` (FalconMamba and Jamba normalize dt, B, C
before the call, so the same capture serves all three).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import recurrence_bytes
from ..operators.base import CausalOperator
from ..operators.ssm import selective_ssm
from ._scan import recording_scan
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter

__all__ = ["MambaAdapter"]

_SCAN_ARGS = ("u", "dt", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")


def _dims(layer: MixerLayer) -> tuple[int, int]:
    """``(d_inner, d_state)`` of the mixer."""
    return int(layer.module.intermediate_size), int(layer.module.ssm_state_size)


class MambaAdapter(MixerAdapter):
    """Per-channel selective-SSM operators ``(d_inner, L, L)``, TSS ``d_state``."""

    name = "mamba"
    mixer = "ssm"
    kind = "selective_ssm"
    channel_label = "channel"

    def state_size(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[1]

    def num_channels(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[0]

    def recording(self, layers: list[MixerLayer], store: dict):
        def on_call(layer, args):
            def whole(name):
                value = args.get(name)
                return None if value is None else value.detach()

            def first(name):  # drop the batch of one
                value = whole(name)
                return None if value is None else value[0]

            store[layer.key] = {
                "u": first("u"),  # (D, L)
                "dt_raw": first("dt"),  # (D, L), before bias and softplus
                "A": whole("A"),  # (D, N)
                "B": first("B").mT,  # (L, N)
                "C": first("C").mT,  # (L, N)
                "D": whole("D"),  # (D,)
                "z": first("z"),  # (D, L)
                "delta_bias": whole("delta_bias"),  # (D,)
                "delta_softplus": bool(args.get("delta_softplus", False)),
            }

        return recording_scan(layers, "mamba_selective_scan", _SCAN_ARGS, on_call)

    @staticmethod
    def discretization(record) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``dt (L, D)``, ``A (D, N)``, ``B (L, N)``, ``C (L, N)`` in float64.

        ``dt`` with its bias and softplus applied, as the scan applies them.
        """
        f64 = torch.float64
        dt = record["dt_raw"].to(f64)
        if record["delta_bias"] is not None:
            dt = dt + record["delta_bias"].to(f64)[:, None]
        if record["delta_softplus"]:
            dt = F.softplus(dt)
        return dt.mT, record["A"].to(f64), record["B"].to(f64), record["C"].to(f64)

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        dt, A, B, C = self.discretization(record)  # (L, D), (D, N), (L, N), (L, N)
        if index is not None:
            dt, A = dt[:, index], A[index]
        return selective_ssm(dt, A, B, C)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        D, N = _dims(layer)
        capture = 4 * (3 * D * L + 2 * L * N)
        forward = 3 * 4 * D * L * N  # discretized A, B u and the states (float32)
        spectra = 3 * 8 * D * L * N + recurrence_bytes(L, N, D)  # result included
        return Footprint(
            capture=capture,
            peak=capture + max(forward, spectra),
            # T, one decay mask, its segment sums and one term: (D, L, L) each.
            dense=4 * 8 * D * L * L,
        )


register_adapter(MambaAdapter(), classes=("MambaMixer", "FalconMambaMixer", "JambaMambaMixer"))
register_family("mamba", "Mamba", "mamba")
register_family("falcon_mamba", "FalconMamba", "mamba")
register_family("jamba", "Jamba", "hybrid")
