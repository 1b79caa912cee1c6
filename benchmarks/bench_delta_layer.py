"""Benchmark one Qwen3-Next-shaped Gated DeltaNet layer (printed numbers, not a test).

The layer has the real head counts (16 key heads, 32 value heads, d_k = d_v = 128,
hidden size 2048) and random weights, in a one-block float32 model on the CPU. All
128 value channels of a head share one operator (``A_t = (I - beta_t k_t k_t^T)
alpha_t``, ``b_t = beta_t k_t`` and ``c_t = q_t / sqrt(d_k)`` do not depend on the
channel), so the layer has 32 operators of state size N = 128, not 4096.

Each case runs in a fresh process; its peak memory is the largest resident set seen
while it runs (sampled every 2 ms) minus the resident set just before it starts.

- ``recurrence``: ``handle.ess_table`` of the layer (forward pass with recording,
  ``recurrence_spectra`` with the delta-rule transitions in rank-one form, ESS, table);
  the capture alone (``handle.operators``) is timed as well, to give the spectra's share.
- ``diagonal``: ``recurrence_spectra`` of a diagonal-A recurrence of the same shape
  (32 channels, N = 128): the goal is the delta rule within 2x of it.
- ``materialize``: ``dense()`` of one head and the dense path ``spectra`` on every
  split (every ``stride``-th beyond L = 1024), scaled to 32 heads and all splits.
- ``naive``: ``torch.linalg.svdvals(T[i:, :i])`` in float64 on every ``stride``-th split of
  one head, scaled to 32 heads and all splits. The largest deviation of the recurrence's
  singular values from these is printed too.

Usage::

    python benchmarks/bench_delta_layer.py               # L = 1024 and 2048
    python benchmarks/bench_delta_layer.py --lengths 256 --stride 8   # quick
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

HEADS_K, HEADS_V, D_K, D_V, HIDDEN = 16, 32, 128, 128, 2048
GiB = 2**30


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Largest resident set above the starting one, sampled in a thread."""

    def __enter__(self):
        # Give freed heap back first, so that reusing it does not hide the peak.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def bytes(self) -> int:
        return self.peak - self.start


def layer_handle():
    from transformers import AutoModelForCausalLM, Qwen3NextConfig

    from ess_widgets.adapters import load

    torch.manual_seed(0)
    cfg = Qwen3NextConfig(
        vocab_size=1024,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        linear_num_key_heads=HEADS_K,
        linear_num_value_heads=HEADS_V,
        linear_key_head_dim=D_K,
        linear_value_head_dim=D_V,
        mlp_only_layers=[0],
        intermediate_size=256,
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return load(model, memory_budget=64 * GiB)


def token_ids(L: int) -> torch.Tensor:
    return torch.randint(0, 1024, (L,), generator=torch.Generator().manual_seed(1))


def sampled_splits(L: int, stride: int) -> list[int]:
    return list(range(stride // 2 or 1, L, stride))


def case_recurrence(L: int, stride: int) -> dict:
    handle = layer_handle()
    ids = token_ids(L)
    handle.operators(ids[:64], 0, max_seconds=None).spectra()  # warm-up: threads, allocator
    with PeakMemory() as mem:
        start = time.perf_counter()
        table = handle.ess_table(
            ids, layers=[0], tol=1e-6, relative=True, progress=False, max_seconds=None
        )
        total = time.perf_counter() - start
    start = time.perf_counter()
    ops = handle.operators(ids, 0, max_seconds=None)
    capture = time.perf_counter() - start
    assert len(table) == HEADS_V * (L - 1)
    # singular values of head 0 at the sampled splits, for the accuracy check
    s = ops.spectra(channels=0)[0]
    rows = [i - 1 for i in sampled_splits(L, stride)]
    torch.save(s[rows], f"/tmp/bench_delta_{L}.pt")
    return {"seconds": total, "capture": capture, "bytes": mem.bytes}


def case_diagonal(L: int, stride: int) -> dict:
    from ess_widgets import recurrence_spectra

    g = torch.Generator().manual_seed(0)
    a = 0.5 + 0.5 * torch.rand(HEADS_V, L, D_K, generator=g, dtype=torch.float64)
    b, c = torch.randn(2, HEADS_V, L, D_K, generator=g, dtype=torch.float64)
    recurrence_spectra(a[:, :64], b[:, :64], c[:, :64], transition="diagonal")  # warm-up
    with PeakMemory() as mem:
        start = time.perf_counter()
        recurrence_spectra(a, b, c, transition="diagonal")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": mem.bytes}


def case_materialize(L: int, stride: int) -> dict:
    from ess_widgets import spectra

    handle = layer_handle()
    ids = token_ids(L)
    ops = handle.operators(ids, 0, max_seconds=None)
    # One head; every split up to L = 1024, every stride-th split beyond (scaled).
    splits = list(range(1, L)) if L <= 1024 else sampled_splits(L, stride)
    with PeakMemory() as mem:
        start = time.perf_counter()
        T = ops.dense(channels=0)
        dense_seconds = time.perf_counter() - start
        start = time.perf_counter()
        spectra(T, splits=splits)
        spectra_seconds = time.perf_counter() - start
    seconds = HEADS_V * (dense_seconds + spectra_seconds * (L - 1) / len(splits))
    return {"seconds": seconds, "bytes": mem.bytes, "bytes_all_T": HEADS_V * L * L * 8}


def case_naive(L: int, stride: int) -> dict:
    handle = layer_handle()
    ids = token_ids(L)
    T = handle.operators(ids, 0, max_seconds=None).dense(channels=0)[0]
    splits = sampled_splits(L, stride)
    out = []
    with PeakMemory() as mem:
        start = time.perf_counter()
        for i in splits:
            out.append(torch.linalg.svdvals(T[i:, :i]))
        seconds = time.perf_counter() - start
    path = f"/tmp/bench_delta_{L}.pt"
    deviation = None
    if os.path.exists(path):
        structured = torch.load(path)
        sigma1 = max(float(s[0]) for s in out)
        worst = max(
            float((structured[r, : len(s[:D_K])] - s[:D_K]).abs().max()) for r, s in enumerate(out)
        )
        deviation = worst / sigma1
    seconds *= HEADS_V * (L - 1) / len(splits)
    return {"seconds": seconds, "bytes": mem.bytes, "deviation": deviation}


CASES = {
    "recurrence": case_recurrence,
    "diagonal": case_diagonal,
    "materialize": case_materialize,
    "naive": case_naive,
}


def run_case(name: str, L: int, stride: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--case", name, "--lengths", str(L), "--stride", str(stride)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {name} at L = {L} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--stride", type=int, default=64, help="every k-th split (scaled)")
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), default=list(CASES), help="which to run"
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](args.lengths[0], args.stride)))
        return
    print(
        f"Gated DeltaNet layer: {HEADS_K} key heads, {HEADS_V} value heads, d_k = d_v = {D_K}; "
        f"{HEADS_V} operators (one per value head), torch threads {torch.get_num_threads()}"
    )
    for L in args.lengths:
        r = {name: run_case(name, L, args.stride) for name in args.cases}
        print(f"\nL = {L} (materialize and naive: scaled, split stride {args.stride})")
        rec = r.get("recurrence")
        if rec:
            spectra_only = rec["seconds"] - rec["capture"]
            print(
                f"  recurrence (ess_table): {rec['seconds']:8.1f} s, peak "
                f"{rec['bytes'] / GiB:.2f} GiB (capture {rec['capture']:.1f} s, spectra and "
                f"table {spectra_only:.1f} s)"
            )
        diag = r.get("diagonal")
        if diag:
            ratio = (
                f"; delta rule / diagonal = {spectra_only / diag['seconds']:.2f}x" if rec else ""
            )
            print(
                f"  diagonal A, same N:     {diag['seconds']:8.1f} s, peak "
                f"{diag['bytes'] / GiB:.2f} GiB{ratio} (spectra and table)"
            )
        mat = r.get("materialize")
        if mat:
            ratio = f"; / recurrence = {mat['seconds'] / rec['seconds']:.1f}x" if rec else ""
            print(
                f"  materialize T + spectra: {mat['seconds']:7.1f} s (scaled from 1 head), peak "
                f"{mat['bytes'] / GiB:.2f} GiB for 1 head (T of 32 heads alone "
                f"{mat['bytes_all_T'] / GiB:.2f} GiB){ratio}"
            )
        naive = r.get("naive")
        if naive:
            ratio = f"; / recurrence = {naive['seconds'] / rec['seconds']:.1f}x" if rec else ""
            deviation = naive["deviation"]
            print(
                f"  naive svdvals loop:     {naive['seconds']:8.1f} s (scaled from 1 head), peak "
                f"{naive['bytes'] / GiB:.2f} GiB{ratio}; largest deviation "
                + (f"{deviation:.1e} sigma_1" if deviation is not None else "n/a")
            )


if __name__ == "__main__":
    main()
