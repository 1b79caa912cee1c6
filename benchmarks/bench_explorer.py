"""Benchmark the progressive explorer (printed numbers and ratios, not a test).

On smollm2-135m at about 1,024 tokens (the issue's sizes):

1. ``ex.layer = k``: seconds from the assignment to the coarse first view and to the
   complete layer (every split of every head exact), and their ratio (goal <= 10%).
   Where the handle records every layer in one pass (``layer_operators``) that pass
   happened on the first view, so the numbers are the spectra and the redraws.
2. a tolerance change: the Python-side time of ``ex.tol = x`` (re-threshold of the
   cached spectra, the charts, the token view), median over several values
   (goal < 100 ms), and the numpy re-threshold alone.
3. how long setting the traitlet blocks the kernel (it should return at once).
4. the views alone: building and serializing the spectrum, ESS-curve and scatter charts
   of 9 heads at L = 128 (what a tolerance change rebuilds), best of 3.

Usage::

    python benchmarks/bench_explorer.py              # 1,024 tokens, layer 5
    python benchmarks/bench_explorer.py --quick      # about 200 tokens
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

import ess_widgets
from ess_widgets import entropy_ess, tolerance_ess
from ess_widgets.app import Explorer
from ess_widgets.views import ess_curve_chart, spectrum_chart, tolerance_vs_entropy_chart

PARAGRAPH = (
    "Effective state size asks how much memory a sequence model really uses. A recurrent "
    "network carries a fixed state from one token to the next, while attention keeps every "
    "past token in its cache. Both can be written as a causal linear operator once their "
    "input-dependent coefficients are fixed, and the rank of each block below the diagonal "
    "says how much of the past must cross each position. On a long walk through the old "
    "town, we passed the river, the market, the cathedral and the small bakery that sells "
    "the best bread in the whole region, and then we went home for dinner with our friends "
    "and talked until late about books, music, travel and the weather.\n"
)


def text_of(handle, tokens: int) -> str:
    """A text of about ``tokens`` tokens (whole paragraphs, then cut at a word)."""
    text = PARAGRAPH
    while len(handle.encode(text)) < tokens:
        text += PARAGRAPH
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix of words with at most `tokens` tokens
        mid = (lo + hi + 1) // 2
        if len(handle.encode(" ".join(words[:mid]))) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def chart_build_seconds() -> float:
    """Best of 3: build and serialize the three charts a tolerance change rebuilds."""
    g = torch.Generator().manual_seed(1)
    S = torch.rand(9, 127, 64, generator=g, dtype=torch.float64).sort(-1, descending=True).values
    tol_ess, ent_ess = tolerance_ess(S, 0.5).numpy(), entropy_ess(S).numpy()
    sigma = S[0, 40].numpy()
    tokens = [f"t{k}" for k in range(128)]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for chart in (
            spectrum_chart(sigma, tol=0.5, split=41),
            ess_curve_chart(tol_ess[0], ent_ess[0], tokens=tokens, tol=0.5, split=41),
            tolerance_vs_entropy_chart(tol_ess, ent_ess, split=41),
        ):
            chart.to_dict()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="about 200 tokens")
    args = parser.parse_args()
    tokens = 200 if args.quick else args.tokens
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    t0 = time.perf_counter()
    handle = ess_widgets.load("smollm2-135m")
    print(f"load: {time.perf_counter() - t0:.1f} s")
    text = text_of(handle, tokens)
    L = len(handle.encode(text))
    # start on another layer and let it finish, so that only the layer switch is timed
    ex = Explorer(model=handle, text=text, layer=0)
    ex.wait()
    assert ex.error == "", ex.error
    recorded = callable(getattr(handle, "layer_operators", None))
    t0 = time.perf_counter()
    ex.layer = args.layer
    blocked = time.perf_counter() - t0
    ex.wait()
    assert ex.error == "", ex.error
    coarse, complete = ex.timings["coarse_s"], ex.timings["complete_s"]
    print(f"L = {L} tokens, layer {args.layer}, {ex.layer_data().num_channels} heads")
    print(f"  ex.layer = {args.layer} returned after {blocked * 1e3:.1f} ms")
    if not recorded:
        print("  (this handle records one layer per forward pass: the times include it)")
    print(f"  coarse view:    {coarse:7.2f} s")
    print(f"  complete layer: {complete:7.2f} s")
    print(f"  ratio coarse / complete: {coarse / complete:.1%} (goal <= 10%)")

    spectra = ex.layer_data().spectra
    tols = np.logspace(-5, -1, 9)
    t0 = time.perf_counter()
    for tol in tols:
        ex.layer_data().tolerance_ess(float(tol))
    rethreshold = (time.perf_counter() - t0) / len(tols)
    updates = []
    for tol in tols:
        t0 = time.perf_counter()
        ex.tol = float(tol)
        updates.append(time.perf_counter() - t0)
    print(
        f"  tolerance change (re-threshold + charts + token view): median "
        f"{statistics.median(updates) * 1e3:.0f} ms, max {max(updates) * 1e3:.0f} ms "
        f"(goal < 100 ms); numpy re-threshold of {spectra.shape} alone "
        f"{rethreshold * 1e3:.1f} ms"
    )
    ex.close()
    print(
        f"views: three charts of 9 heads x L=128 built and serialized in "
        f"{chart_build_seconds() * 1e3:.0f} ms (best of 3)"
    )


if __name__ == "__main__":
    main()
