"""Time estimates before work: a cost model per path and this machine's speed.

Cost model, per channel (one operator), with ``S`` splits:

- dense path (attention maps): one factorization of the block ``T[i:, :i]`` per split
  ``i``: ``units = sum over splits of min(i, L-i)^2 * max(i, L-i)``;
- recurrence path (SSMs, state size ``N``): ``units = L N^2`` to accumulate the
  Gramians and ``N^3`` per split for their eigenvalues.

Seconds are ``units`` times the seconds per unit of the path, measured once per process
by timing the core's own ``spectra`` and ``recurrence_spectra`` on a small random
problem each (``calibrate``). The estimate covers the spectra, not the forward
pass (much cheaper), and never runs the model.
"""

from __future__ import annotations

import logging
import time

import torch

__all__ = ["calibrate", "seconds", "check_time", "WARN_SECONDS"]

log = logging.getLogger("ess_widgets")

WARN_SECONDS = 30.0
_SPEED: dict[str, float] = {}


def dense_units(L: int, splits) -> float:
    """``sum over splits of min(i, L-i)^2 * max(i, L-i)``, per channel."""
    total = 0.0
    for i in splits:
        small, big = min(i, L - i), max(i, L - i)
        total += float(small) * small * big
    return total


def recurrence_units(L: int, N: int, num_splits: int) -> float:
    """``L N^2 + len(splits) N^3``, per channel."""
    return float(L) * N * N + float(num_splits) * N**3


def _best_time(run, repeats: int = 3) -> float:
    run()  # warm-up: thread pools, allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-6)


def calibrate(path: str = "dense") -> float:
    """Seconds per unit of a path on this machine, measured once per process.

    ``path`` is ``"dense"`` (``spectra`` of one random causal ``128 x 128`` block, all
    splits) or ``"recurrence"`` (``recurrence_spectra``, 4 channels, L = 256, N = 16):
    sizes where the factorizations, not the per-call overhead, take the time (about
    0.1-0.3 s each on a 2-core machine; the fastest of three runs, as contention only
    slows). Smaller inputs are overestimated.
    """
    if path in _SPEED:
        return _SPEED[path]
    from ..core import recurrence_spectra, spectra

    g = torch.Generator().manual_seed(0)
    if path == "dense":
        L = 128
        T = torch.tril(torch.randn(1, L, L, generator=g, dtype=torch.float64))
        _SPEED[path] = _best_time(lambda: spectra(T)) / dense_units(L, range(1, L))
    elif path == "recurrence":
        C, L, N = 4, 256, 16
        a = 0.9 * torch.rand(C, L, N, generator=g, dtype=torch.float64)
        b, c = torch.randn(2, C, L, N, generator=g, dtype=torch.float64)
        t = _best_time(lambda: recurrence_spectra(a, b, c))
        _SPEED[path] = t / (C * recurrence_units(L, N, L - 1))
    else:
        raise ValueError(f"`path` must be 'dense' or 'recurrence', got {path!r}.")
    return _SPEED[path]


def seconds(L: int, splits, channels: int, state_size: int | None) -> float:
    """Estimated seconds of the spectra of one mixer (``channels`` operators)."""
    if state_size is None:
        return channels * dense_units(L, splits) * calibrate("dense")
    units = recurrence_units(L, int(state_size), len(splits))
    return channels * units * calibrate("recurrence")


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def check_time(est: dict, max_seconds: float | None, what: str) -> None:
    """Refuse work estimated above ``max_seconds``; log a warning above 30 s.

    Raises
    ------
    ValueError
        With the estimate and the ways out (fewer layers, a split stride, a GPU,
        ``max_seconds=None``).
    """
    s = est["seconds"]
    if max_seconds is not None and s > max_seconds:
        raise ValueError(
            f"{what} at L = {est['L']} tokens ({est['splits']} splits) is estimated at "
            f"about {_duration(s)} on this machine, over max_seconds = {max_seconds:g}. "
            "Options: fewer layers (layers=[...]), a split stride (splits=8 computes every "
            "8th split), a shorter input, a GPU (device='cuda'), or max_seconds=None to "
            "run it anyway."
        )
    if s > WARN_SECONDS:
        log.warning("%s: about %s estimated (L = %d tokens).", what, _duration(s), est["L"])
