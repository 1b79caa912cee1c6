"""Benchmark the model adapters on whole models (printed numbers, not a test).

1. smollm2-135m (the built-in pretrained model): all 30 layers x 9 heads on a
   128-token English text, on the CPU: seconds from the text to the complete ESS
   table (tokenization, forward pass with recording, spectra, ESS, DataFrame).
2. A Mamba-130m-sized random model (24 layers, hidden 768, d_inner 1536,
   d_state 16, from MambaConfig) at L = 512 through the structured path
   (``recurrence_spectra``): a few layers are timed and scaled to 24. The
   baseline materializes the dense operators of a few channels and runs the
   naive per-split ``svdvals`` loop, scaled to all channels and layers.

Usage::

    python benchmarks/bench_adapters.py              # the issue's sizes
    python benchmarks/bench_adapters.py --quick      # small sizes, a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ess_widgets import spectra_ref
from ess_widgets.adapters import load

TEXT = (
    "Effective state size asks how much memory a sequence model really uses. A recurrent "
    "network carries a fixed state from one token to the next, while attention keeps every "
    "past token in its cache. Both can be written as a causal linear operator once their "
    "input-dependent coefficients are fixed, and the rank of each block below the diagonal "
    "says how much of the past must cross each position. On a long walk through the old "
    "town, we passed the river, the market, the cathedral and the small bakery that sells "
    "the best bread in the whole region, and then we went home for dinner with our friends "
    "and talked until late about books, music, travel and the weather."
)


def text_of_length(tokenizer, n: int) -> str:
    """The longest prefix of TEXT (whole words) with at most ``n`` tokens."""
    words = TEXT.split(" ")
    best = ""
    for k in range(1, len(words) + 1):
        candidate = " ".join(words[:k])
        if len(tokenizer(candidate)["input_ids"]) > n:
            break
        best = candidate
    return best


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_smollm2(tokens: int) -> None:
    handle, t_load = timed(lambda: load("smollm2-135m", device="cpu"))
    text = text_of_length(handle.tokenizer, tokens)
    L = len(handle.encode(text))
    handle.ess_table(text[:40], progress=False)  # warm-up (threads, allocator)
    runs = []
    for _ in range(2):
        table, t = timed(lambda: handle.ess_table(text, progress=False))
        runs.append(t)
    print(
        f"smollm2-135m, {handle.num_layers} layers x {handle.num_channels(0)} heads, L = {L}: "
        f"text -> ESS table ({len(table)} rows) {min(runs):.2f} s (runs: "
        + ", ".join(f"{t:.2f}" for t in runs)
        + f"); model load {t_load:.1f} s (once)"
    )


def mamba_130m_sized(layers: int):
    from transformers import AutoModelForCausalLM, MambaConfig

    torch.manual_seed(0)
    cfg = MambaConfig(
        num_hidden_layers=layers,
        hidden_size=768,
        intermediate_size=1536,
        state_size=16,
        vocab_size=50280,
    )
    return AutoModelForCausalLM.from_config(cfg).eval(), cfg


def bench_mamba(L: int, timed_layers: int, naive_channels: int) -> None:
    total_layers = 24
    # Only the timed layers are built: the layers after them never run (the handle stops
    # the forward pass after the last layer it records).
    model, cfg = mamba_130m_sized(timed_layers)
    handle = load(model)
    ids = torch.randint(0, cfg.vocab_size, (L,), generator=torch.Generator().manual_seed(0))
    D = cfg.intermediate_size
    handle.ess_table(ids[:16], layers=0, progress=False)  # warm-up
    table, t_struct = timed(
        lambda: handle.ess_table(ids, layers=list(range(timed_layers)), progress=False)
    )
    per_layer = t_struct / timed_layers
    whole = per_layer * total_layers
    print(
        f"Mamba-130m-sized ({total_layers} layers, d_inner {D}, d_state {cfg.state_size}), "
        f"L = {L}, structured path: {t_struct:.2f} s for {timed_layers} layers "
        f"({len(table)} rows) -> {per_layer:.2f} s per layer -> about {whole:.0f} s for the "
        f"whole model (scaled from {timed_layers} timed layers)"
    )
    # Baseline: materialize T for a few channels and loop svdvals over the splits.
    ops = handle.operators(ids, 0)
    channels = slice(0, naive_channels)
    dense, t_dense = timed(lambda: ops.dense(channels=channels))
    _, t_svd = timed(lambda: spectra_ref(dense, dtype=torch.float64))
    naive_per_channel = (t_dense + t_svd) / naive_channels
    naive_whole = naive_per_channel * D * total_layers
    print(
        f"  naive (dense T + one svdvals per split, float64): {t_dense + t_svd:.2f} s for "
        f"{naive_channels} channels ({t_dense:.2f} s dense, {t_svd:.2f} s SVDs) -> about "
        f"{naive_whole / 3600:.1f} h for the whole model (scaled to {D} channels x "
        f"{total_layers} layers) -> structured path {naive_whole / whole:.0f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--timed-layers", type=int, default=2)
    parser.add_argument("--naive-channels", type=int, default=4)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; CPU only. The machine may be shared: "
        "timings are noisy."
    )
    if not args.skip_smollm2:
        bench_smollm2(32 if args.quick else 128)
    if args.quick:
        bench_mamba(64, 1, 2)
    else:
        bench_mamba(512, args.timed_layers, args.naive_channels)


if __name__ == "__main__":
    main()
