"""Benchmark the recurrent mixer operators at real per-layer sizes (printed, not a test).

For each family, one layer shaped like a real checkpoint's, with random
coefficients: seconds for the spectra of every split through the recurrence
(``CausalOperator.spectra``, no L x L matrix) against materializing the operators
and taking the dense path (``spectra(op.dense())``), on the same few channels,
scaled to the whole layer. Both run in float64 on the CPU, in one process, so the
ratio is what to read (the machine may be shared).

Usage::

    python benchmarks/bench_recurrent.py            # L = 256
    python benchmarks/bench_recurrent.py --quick    # L = 64, a few seconds
"""

from __future__ import annotations

import argparse
import time

import torch

from ess_widgets import spectra
from ess_widgets.operators import (
    gated_short_convolution,
    mlstm,
    rg_lru,
    weighted_linear_attention,
    wkv4,
)

F64 = torch.float64


def layers(L: int, g: torch.Generator):
    """``(name, operator on a few channels, channels timed, channels of the layer)``."""

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=F64)

    D = 48
    yield (
        "WKV-4 (RWKV/rwkv-4-169m-pile: 768 channels, N=2)",
        wkv4(-torch.exp(randn(D)), randn(D), randn(L, D)),
        D,
        768,
    )
    D = 128
    yield (
        "RG-LRU (google/recurrentgemma-2b: 2560 channels, N=1)",
        rg_lru(-rand(L, D), rand(L, D)),
        D,
        2560,
    )
    yield (
        "gated short conv (LiquidAI/LFM2-1.2B: 2048 channels, K=3)",
        gated_short_convolution(randn(D, 3), randn(L, D), randn(L, D)),
        D,
        2048,
    )
    yield (
        "lightning (MiniMaxAI/MiniMax-Text-01: 64 heads, d=128)",
        weighted_linear_attention(randn(1, L, 128), randn(1, L, 128), rand(1, 1) * 0.5 + 0.5),
        1,
        64,
    )
    yield (
        "mLSTM (NX-AI/xLSTM-7b: 8 heads, d_qk=256)",
        mlstm(randn(1, L, 256), randn(1, L, 256), randn(1, L), randn(1, L) + 3.0),
        1,
        8,
    )


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L = 64")
    args = parser.parse_args()
    L = 64 if args.quick else 256
    print(f"L = {L}, float64, CPU, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    for name, op, timed_channels, channels in layers(L, g):
        structured, t_rec = timed(op.spectra)
        dense, t_dense = timed(lambda op=op: spectra(op.dense()))
        K = structured.shape[-1]
        scale = float(dense[..., :1].amax())
        error = float((structured - dense[..., :K]).abs().max()) / scale
        per_layer = channels / timed_channels
        dense_bytes = channels * L * L * 8
        print(
            f"{name}\n  recurrence {t_rec * per_layer:7.1f} s/layer, "
            f"dense {t_dense * per_layer:7.1f} s/layer (x{t_dense / t_rec:.1f}); "
            f"dense T of the layer {dense_bytes / 2**20:.0f} MiB; "
            f"max relative difference {error:.1e}"
        )


if __name__ == "__main__":
    main()
