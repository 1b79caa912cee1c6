"""How close ``handle.estimate`` is to the measured time of ``ess_table``, printed as ratios.

Tiny random models (offline): one attention layer (8 heads) and one Mamba layer (64
channels, d_state 16) at a few lengths. Run: ``python benchmarks/bench_estimate.py``.
"""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers as tf

import ess_widgets


def attention_handle():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        num_hidden_layers=1,
        hidden_size=64,
        intermediate_size=64,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=64,
        max_position_embeddings=2048,
    )
    return ess_widgets.load(tf.AutoModelForCausalLM.from_config(cfg))


def mamba_handle():
    torch.manual_seed(0)
    cfg = tf.MambaConfig(
        num_hidden_layers=1, hidden_size=32, intermediate_size=64, state_size=16, vocab_size=64
    )
    return ess_widgets.load(tf.AutoModelForCausalLM.from_config(cfg))


def main():
    rows = []
    for label, handle, lengths in (
        ("attention, 8 heads", attention_handle(), (64, 128, 256, 384)),
        ("mamba, 64 channels, N=16", mamba_handle(), (128, 512, 1024)),
    ):
        handle.ess_table(list(range(1, 17)), progress=False)  # warm-up
        for L in lengths:
            ids = torch.randint(1, 64, (L,), generator=torch.Generator().manual_seed(L))
            for splits in (None, 8):
                est = handle.estimate(ids, splits=splits)["seconds"]
                start = time.perf_counter()
                handle.ess_table(ids, splits=splits, progress=False)
                took = time.perf_counter() - start
                rows.append((label, L, splits or 1, est, took))
    print(f"{'mixer':28} {'L':>5} {'stride':>6} {'estimate s':>11} {'measured s':>11} {'ratio':>6}")
    for label, L, stride, est, took in rows:
        print(f"{label:28} {L:5d} {stride:6d} {est:11.3f} {took:11.3f} {took / est:6.2f}")


if __name__ == "__main__":
    main()
