"""Time estimates before work: a cost model per path and this machine's speed.

Cost model (in "units", about one multiply-add of a dense factorization):

- dense path (attention maps): per channel and split ``i``, one factorization of
  the block ``T[i:, :i]`` of size ``(L - i) x i``: ``min(i, L-i)^2 * max(i, L-i)``;
- recurrence path (SSMs, state size ``N``): per channel, ``L N^2`` to accumulate
  the Gramians and ``N^3`` per split for their eigenvalues.

The speed (units per second) comes from a few tiny float64 solves timed once per
process (``calibrate``). The estimate covers the spectra, not the forward pass
(which is much cheaper), and never runs the model.
"""

from __future__ import annotations

import logging
import time

import torch

__all__ = ["calibrate", "seconds", "check_time", "WARN_SECONDS"]

log = logging.getLogger("ess_widgets")

WARN_SECONDS = 30.0
_SPEED: list[float] = []


def calibrate() -> float:
    """Units per second of this machine's CPU on small float64 solves (cached).

    Times ``svdvals`` of a batch of 16 blocks of 96 x 48 (the dense path's shape)
    three times and keeps the fastest; about 10 ms.
    """
    if _SPEED:
        return _SPEED[0]
    g = torch.Generator().manual_seed(0)
    blocks = torch.randn(16, 96, 48, generator=g, dtype=torch.float64)
    units = 16 * 48 * 48 * 96
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.linalg.svdvals(blocks)
        best = min(best, time.perf_counter() - start)
    _SPEED.append(units / max(best, 1e-6))
    return _SPEED[0]


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


def seconds(L: int, splits, channels: int, state_size: int | None) -> float:
    """Estimated seconds of the spectra of one mixer (``channels`` operators)."""
    if state_size is None:
        units = dense_units(L, splits)
    else:
        units = recurrence_units(L, int(state_size), len(splits))
    return channels * units / calibrate()


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
