"""Benchmark the core against the naive loop ``svdvals(T[..., i:, :i])`` over all splits.

Prints times, ratios and the largest deviations measured in this one run; it asserts
nothing (speed goals are not tests). Usage::

    python benchmarks/bench_core.py            # the issue's sizes
    python benchmarks/bench_core.py --quick    # small sizes, a few seconds
    python benchmarks/bench_core.py --device cuda
    python benchmarks/bench_core.py --only splits   # one part: dense, structured, splits, gpu
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial

import torch

from ess_widgets import recurrence_operator, recurrence_spectra, spectra


def naive_loop(T: torch.Tensor) -> torch.Tensor:
    """The baseline: one ``svdvals`` per split, in the dtype of ``T``."""
    L = T.shape[-1]
    out = T.new_zeros(*T.shape[:-2], L - 1, L // 2)
    for i in range(1, L):
        out[..., i - 1, : min(i, L - i)] = torch.linalg.svdvals(T[..., i:, :i])
    return out


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def causal_attention(heads, L, generator):
    scores = torch.randn(heads, L, L, generator=generator)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), -1)


def bench_dense(heads, L, device):
    T = causal_attention(heads, L, torch.Generator().manual_seed(0)).to(device)
    spectra(T[:1, :8, :8], device=device)  # warm-up (thread pool, CUDA context)
    naive, t_naive = timed(lambda: naive_loop(T), device)
    fast, t_fast = timed(lambda: spectra(T, device=device), device)
    deviation = (fast.to(naive.device, torch.float64) - naive.double()).abs().amax()
    sigma_1 = naive[..., 0].amax().double()
    print(
        f"dense  {heads} heads x L={L} (float32 in): naive loop {t_naive:7.2f} s | "
        f"spectra {t_fast:6.2f} s | ratio {t_naive / t_fast:5.1f}x | "
        f"max |diff| = {float(deviation / sigma_1):.1e} sigma_1"
    )


def bench_structured(channels, L, N, naive_channels, device):
    g = torch.Generator().manual_seed(1)
    a = (0.8 + 0.2 * torch.rand(channels, L, N, generator=g, dtype=torch.float64)).to(device)
    b = torch.randn(channels, L, N, generator=g, dtype=torch.float64).to(device)
    c = torch.randn(channels, L, N, generator=g, dtype=torch.float64).to(device)
    recurrence_spectra(a[:1, :8], b[:1, :8], c[:1, :8], device=device)  # warm-up
    fast, t_fast = timed(lambda: recurrence_spectra(a, b, c, device=device), device)
    sub = slice(0, naive_channels)

    def materialize_and_loop():
        return naive_loop(recurrence_operator(a[sub], b[sub], c[sub]))

    naive, t_sub = timed(materialize_and_loop, device)
    t_naive = t_sub * channels / naive_channels
    exact, approx = naive[..., :N].cpu(), fast[sub].cpu()
    significant = exact >= 1e-6 * exact[..., :1]
    rel = ((approx - exact).abs() / exact.clamp_min(1e-300))[significant].amax()
    print(
        f"struct {channels} channels x L={L}, N={N}: naive (materialize + loop, "
        f"{naive_channels} channels timed, scaled) {t_naive:8.1f} s | recurrence_spectra "
        f"{t_fast:6.2f} s | ratio {t_naive / t_fast:6.0f}x | max rel diff {float(rel):.1e}"
    )


def measure_splits(heads, L, stride, device, repeats=3):
    """``spectra(T, splits=range(1, L, stride))`` against every split, both methods.

    Each side runs ``repeats`` times, alternating, and the best wall and CPU times
    count (a shared machine slows single runs at random). Returns per method a dict
    with ``all_s``, ``part_s`` (best wall seconds), ``wall_ratio``, ``cpu_ratio``
    (the process's CPU seconds: what a quiet machine would see), ``ideal`` (the
    ratio of the numbers of splits) and ``bit_equal`` (the rows asked against the
    same rows of the full run).
    """
    T32 = causal_attention(heads, L, torch.Generator().manual_seed(2)).to(device)
    subset = range(1, L, stride)
    rows = [i - 1 for i in subset]
    out = {}
    for method, T in (("gram", T32), ("svd", T32.double())):
        spectra(T[:1, :8, :8], method=method, device=device)  # warm-up
        best = {"full": (float("inf"),) * 2, "part": (float("inf"),) * 2}
        for _ in range(repeats):
            for side, splits in (("full", None), ("part", subset)):
                cpu = time.process_time()
                result, wall = timed(
                    partial(spectra, T, splits=splits, method=method, device=device), device
                )
                cpu = time.process_time() - cpu
                best[side] = (min(best[side][0], wall), min(best[side][1], cpu))
                if side == "full":
                    full = result
                else:
                    part = result
        out[method] = {
            "all_s": best["full"][0],
            "part_s": best["part"][0],
            "wall_ratio": best["full"][0] / best["part"][0],
            "cpu_ratio": best["full"][1] / best["part"][1],
            "ideal": (L - 1) / len(subset),
            "bit_equal": torch.equal(part, full[..., rows, :]),
        }
    return out


def bench_splits(heads, L, stride, device, repeats=3):
    for method, r in measure_splits(heads, L, stride, device, repeats).items():
        print(
            f"splits {heads} heads x L={L}, method={method}: all {L - 1} splits "
            f"{r['all_s']:6.2f} s | {len(range(1, L, stride))} splits (stride {stride}) "
            f"{r['part_s']:5.2f} s | ratio {r['wall_ratio']:4.1f}x wall, {r['cpu_ratio']:4.1f}x "
            f"CPU time (best of {repeats} each; ideal {r['ideal']:.1f}x) | bit-equal rows: "
            f"{r['bit_equal']} | load average {os.getloadavg()[0]:.1f}"
        )


def bench_gpu(heads, L):
    """The batched Gram path on CUDA against the CPU path of the same machine."""
    if not torch.cuda.is_available():
        print("gpu: no CUDA device here, skipped")
        return
    cuda = torch.device("cuda")
    T = causal_attention(heads, L, torch.Generator().manual_seed(3))  # float32: Gram path
    spectra(T[:1, :40, :40], device=cuda)  # warm-up: context, cuSOLVER handles
    on_cpu, t_cpu = timed(partial(spectra, T, device="cpu"), cuda)
    on_gpu, t_gpu = timed(partial(spectra, T, device=cuda), cuda)
    sigma_1 = on_cpu[..., :1].amax()
    significant = on_cpu >= 1e-6 * sigma_1
    deviation = (on_gpu.cpu() - on_cpu).abs()
    print(
        f"gpu    {heads} heads x L={L} (float32 in, Gram path): CPU ({torch.get_num_threads()} "
        f"threads) {t_cpu:6.2f} s | CUDA batched {t_gpu:6.2f} s | ratio {t_cpu / t_gpu:5.1f}x | "
        f"max |diff| {float(deviation[significant].max() / sigma_1):.1e} sigma_1 above "
        f"1e-6 sigma_1, {float(deviation.max() / sigma_1):.1e} overall"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    parser.add_argument("--only", choices=["dense", "structured", "splits", "gpu"], default=None)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    parts = [args.only] if args.only else ["dense", "structured", "splits", "gpu"]
    if "dense" in parts:
        bench_dense(heads=4 if args.quick else 12, L=128 if args.quick else 512, device=device)
    if "structured" in parts:
        if args.quick:
            bench_structured(channels=16, L=256, N=16, naive_channels=2, device=device)
        else:
            bench_structured(channels=64, L=1024, N=16, naive_channels=2, device=device)
    if "splits" in parts:
        bench_splits(
            heads=2 if args.quick else 4, L=128 if args.quick else 512, stride=8, device=device
        )
    if "gpu" in parts:
        bench_gpu(heads=12, L=256 if args.quick else 1024)


if __name__ == "__main__":
    main()
