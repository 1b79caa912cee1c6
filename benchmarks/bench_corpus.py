"""Benchmark corpus sweeps (printed numbers, not a test).

1. The local engine against a plain loop over ``handle.ess_table`` on the same
   texts and the same loaded model: texts per second of each, and the sweep's
   overhead (Arrow conversion, Parquet files, progress) as a ratio. The two are
   run alternately ``--repeats`` times and the fastest of each is kept, which
   damps the noise of a shared machine.
2. With ``--ray``: the Ray engine with 2 actors (1 CPU each) on Ray's local
   cluster against the local engine. The Ray time includes each actor's start-up
   (importing torch and loading the model once); the cluster start-up itself is
   not counted.

Texts: Python standard-library docstrings (``ess_widgets.corpus.sources``).

Usage::

    python benchmarks/bench_corpus.py                   # smollm2-135m, 24 texts, 3 layers
    python benchmarks/bench_corpus.py --ray             # and the Ray engine, 2 actors
    python benchmarks/bench_corpus.py --texts 8 --layers 0   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import ess_widgets
from ess_widgets.corpus import read_sweep
from ess_widgets.corpus.sources import python_docstrings

TOL = 1e-2


def plain_loop(handle, texts, layers) -> float:
    start = time.perf_counter()
    for text in texts:
        handle.ess_table(text, layers=layers, tol=TOL, relative=True, progress=False)
    return time.perf_counter() - start


def local_sweep(model, texts, layers, out: Path, shard_size: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ess_widgets.sweep(
        model, texts, layers=layers, tol=TOL, relative=True, out=out,
        shard_size=shard_size, progress=False,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--texts", type=int, default=24)
    parser.add_argument("--layers", default="0,15,29", help="comma-separated layer indices")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="also time engine='ray', 2 actors")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads here (Ray actors: 1 each)"
    )
    args = parser.parse_args()
    # One thread by default: on a shared, loaded machine two threads wait on each other
    # at every parallel region, and ESS runs many times slower.
    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    texts = python_docstrings(args.texts, max_chars=260)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    start = time.perf_counter()
    handle = ess_widgets.load(args.model)
    print(f"{args.model}: loaded in {time.perf_counter() - start:.1f} s; {len(texts)} texts, "
          f"layers {layers}, mean {sum(len(handle.encode(t)) for t in texts) / len(texts):.0f} "
          "tokens")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    try:
        loops, sweeps = [], []
        for _ in range(args.repeats):
            loops.append(plain_loop(handle, texts, layers))
            sweeps.append(local_sweep(handle, texts, layers, work / "local", args.shard_size))
        loop_s, sweep_s = min(loops), min(sweeps)
        n = len(texts)
        print(f"plain loop over ess_table: {n / loop_s:6.2f} texts/s  (runs: "
              + ", ".join(f"{t:.1f} s" for t in loops) + ")")  # fmt: skip
        print(f"sweep, engine='local':     {n / sweep_s:6.2f} texts/s  (runs: "
              + ", ".join(f"{t:.1f} s" for t in sweeps) + ")")  # fmt: skip
        print(f"local engine overhead: {sweep_s / loop_s - 1:+.1%} (sweep time / loop time - 1)")
        if args.ray:
            import ray

            for attempt in range(3):  # a loaded machine can miss Ray's 30 s start-up wait
                try:
                    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                    break
                except Exception:
                    ray.shutdown()
                    if attempt == 2:
                        raise
            try:
                out = work / "ray"
                start = time.perf_counter()
                ess_widgets.sweep(
                    args.model, texts, layers=layers, tol=TOL, relative=True, out=out,
                    shard_size=args.shard_size, progress=False, engine="ray",
                    concurrency=2, num_cpus=1,
                )  # fmt: skip
                ray_s = time.perf_counter() - start
            finally:
                ray.shutdown()
            same = read_sweep(out).equals(read_sweep(work / "local"))
            print(f"sweep, engine='ray', 2 actors: {n / ray_s:6.2f} texts/s ({ray_s:.1f} s, "
                  f"actor start-up included); same table as local: {same}")  # fmt: skip
            print(f"ray / local speed: {sweep_s / ray_s:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
