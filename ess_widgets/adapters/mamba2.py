"""Mamba2 (and Bamba, GraniteMoeHybrid) layers: one SSD operator per head.

The operator of head ``h`` is shared by the head's channels. Per head ``h`` (in
group ``g`` of the B/C projections) and each of its ``head_dim`` channels, the
chunked scan computes::

    x_t = exp(dt_t[h] A[h]) x_(t-1) + dt_t[h] B_t[g] u_t,   y_t = C_t[g] . x_t

so ``T[i, j] = (C_i . B_j) exp(A_h sum_{t=j+1..i} dt_t[h]) dt_j[h]`` with a scalar
decay. The scan adds ``D[h] u_t`` and its output goes into ``mixer.norm``, a
gated RMSNorm over groups of channels; the operator here is the scan alone and
ends at the input of ``mixer.norm`` (without ``D u``, which never enters ESS).
``dt`` (with ``dt_bias``, softplus and ``dt_limit``), ``A = -exp(A_log)``, ``B`` and
``C`` are read from the arguments of the module-level ``mamba2_chunk_scan``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import recurrence_bytes
from ..operators.base import CausalOperator
from ..operators.ssm import ssd
from ._scan import recording_scan
from .architectures import MixerLayer, register_adapter, register_family
from .base import Footprint, MixerAdapter

__all__ = ["Mamba2Adapter"]

_SCAN_ARGS = (
    "u",
    "dt",
    "A",
    "B",
    "C",
    "chunk_size",
    "D",
    "dt_bias",
    "initial_states",
    "dt_softplus",
    "dt_limit",
)


def _dims(layer: MixerLayer) -> tuple[int, int, int, int]:
    """``(heads, head_dim, d_state, chunk)`` of the mixer."""
    m = layer.module
    return int(m.num_heads), int(m.head_dim), int(m.ssm_state_size), int(m.chunk_size)


class Mamba2Adapter(MixerAdapter):
    """Per-head SSD operators ``(H, L, L)``, TSS ``d_state``."""

    name = "mamba2"
    mixer = "ssm"
    kind = "ssd"
    channel_label = "head"

    def state_size(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[2]

    def num_channels(self, layer: MixerLayer, config) -> int:
        return _dims(layer)[0]

    def recording(self, layers: list[MixerLayer], store: dict):
        def on_call(layer, args):
            if args.get("initial_states") is not None:
                raise RuntimeError(
                    "The Mamba2 scan was called with an initial state (a cache): run the "
                    "model with use_cache=False on the whole sequence."
                )

            def whole(name):
                value = args.get(name)
                return None if value is None else value.detach()

            store[layer.key] = {
                "u": whole("u")[0],  # (L, H, P)
                "dt_raw": whole("dt")[0],  # (L, H), before bias, softplus and limit
                "A": whole("A"),  # (H,)
                "B": whole("B")[0],  # (L, G, N)
                "C": whole("C")[0],  # (L, G, N)
                "D": whole("D"),  # (H,)
                "dt_bias": whole("dt_bias"),  # (H,)
                "dt_softplus": bool(args.get("dt_softplus", False)),
                "dt_limit": tuple(args.get("dt_limit", (0.0, float("inf")))),
            }

        return recording_scan(layers, "mamba2_chunk_scan", _SCAN_ARGS, on_call)

    @staticmethod
    def discretization(record) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``dt (L, H)``, ``A (H,)``, ``B (L, H, N)``, ``C (L, H, N)`` in float64.

        ``dt`` with bias, softplus and limits applied as the scan applies them; ``B``
        and ``C`` repeated from their groups to the heads.
        """
        f64 = torch.float64
        dt = record["dt_raw"].to(f64)
        if record["dt_bias"] is not None:
            dt = dt + record["dt_bias"].to(f64)
        if record["dt_softplus"]:
            dt = F.softplus(dt)
        lo, hi = record["dt_limit"]
        dt = dt.clamp(min=lo, max=hi)
        H = dt.shape[-1]
        G = record["B"].shape[-2]
        B = record["B"].to(f64).repeat_interleave(H // G, dim=-2)
        C = record["C"].to(f64).repeat_interleave(H // G, dim=-2)
        return dt, record["A"].to(f64), B, C

    def operator(self, record, layer: MixerLayer, index=None) -> CausalOperator:
        dt, A, B, C = self.discretization(record)  # (L, H), (H,), (L, H, N) x 2
        if index is not None:
            dt, A, B, C = dt[:, index], A[index], B[:, index], C[:, index]
        return ssd(dt, A, B, C)

    def footprint(self, layer: MixerLayer, config, L: int) -> Footprint:
        H, P, N, chunk = _dims(layer)
        capture = 4 * (L * H * P + 2 * L * H * N + L * H)
        chunks = -(-L // chunk)
        forward = 4 * (4 * H * L * chunk + 2 * (chunks + 1) * H * P * N)
        spectra = 3 * 8 * H * L * N + recurrence_bytes(L, N, H)  # result included
        return Footprint(
            capture=capture,
            peak=capture + max(forward, spectra),
            # C B^T, the segment sums, the decay mask and T: (H, L, L) each.
            dense=4 * 8 * H * L * L,
        )


register_adapter(
    Mamba2Adapter(),
    classes=(
        "Mamba2Mixer",
        "BambaMixer",
        "GraniteMoeHybridMambaLayer",
        "FalconH1Mixer",
        "NemotronHMamba2Mixer",
        "Zamba2MambaMixer",
    ),
)
register_family("mamba2", "Mamba2", "mamba2")
register_family("bamba", "Bamba", "hybrid")
register_family("granitemoehybrid", "GraniteMoeHybrid", "hybrid")
register_family("falcon_h1", "Falcon-H1", "hybrid")
register_family("nemotron_h", "NemotronH", "hybrid")
register_family("zamba2", "Zamba2", "hybrid")
