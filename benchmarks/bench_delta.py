"""Benchmark a delta-rule head through ``recurrence_spectra``: ``DeltaTransition`` against
the same transitions as a dense ``(L, N, N)`` tensor and against a diagonal A of the same N.

A Qwen3-Next-shaped Gated DeltaNet head: N = d_k = 128, L = 1024, float64, random
L2-normalised keys, beta in [0, 1], decay in [0.9, 1]. Each variant runs in its own
process so that its peak memory (maximum resident set size, minus the process's size
after imports) is its own. Prints times, peak memories and ratios measured in one run;
asserts nothing. Usage::

    python benchmarks/bench_delta.py               # N = 128, L = 1024, one head
    python benchmarks/bench_delta.py --L 256 --N 32  # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

VARIANTS = ("delta", "dense", "diagonal")


def run_variant(variant, L, N, channels):
    """Time one variant here; return seconds and peak RSS growth in bytes."""
    from ess_widgets import DeltaTransition, recurrence_spectra

    one = torch.ones(4, 2, dtype=torch.float64)  # warm-up: thread pool, LAPACK
    recurrence_spectra(one, one, one, transition="diagonal", device="cpu")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    g = torch.Generator().manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(L, N, generator=g, dtype=torch.float64), dim=-1)
    beta = torch.rand(L, generator=g, dtype=torch.float64)
    decay = 0.9 + 0.1 * torch.rand(L, generator=g, dtype=torch.float64)
    b = torch.randn(channels, L, N, generator=g, dtype=torch.float64)
    c = torch.randn(channels, L, N, generator=g, dtype=torch.float64)
    start = time.perf_counter()
    if variant == "delta":
        s = recurrence_spectra(DeltaTransition(decay, beta, k), b, c, device="cpu")
    elif variant == "dense":  # the materialized transitions, built inside the timing
        a = DeltaTransition(decay, beta, k).dense()
        s = recurrence_spectra(a, b, c, transition="dense", device="cpu")
    else:  # same N, diagonal transitions: the cost floor of the square-root sweep
        a = decay[:, None].expand(L, N).contiguous()
        s = recurrence_spectra(a, b, c, transition="diagonal", device="cpu")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": seconds, "peak": peak, "sigma_1": float(s[..., 0].amax())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=1024)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.L, args.N, args.channels)))
        return
    print(
        f"delta-rule head, L={args.L}, N={args.N}, {args.channels} channel(s), float64, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--L",
                str(args.L),
                "--N",
                str(args.N),
                "--channels",
                str(args.channels),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"  {variant:8s} {r['seconds']:7.2f} s   peak {r['peak'] / 2**20:7.1f} MiB")
    d, dense, diag = results["delta"], results["dense"], results["diagonal"]
    same = abs(d["sigma_1"] - dense["sigma_1"]) <= 1e-10 * dense["sigma_1"]
    print(
        f"DeltaTransition / diagonal: time {d['seconds'] / diag['seconds']:.2f}x, "
        f"memory {d['peak'] / max(diag['peak'], 1):.2f}x | dense / DeltaTransition: time "
        f"{dense['seconds'] / d['seconds']:.2f}x, memory {dense['peak'] / max(d['peak'], 1):.1f}x "
        f"| sigma_1 delta == dense to 1e-10: {same}"
    )


if __name__ == "__main__":
    main()
