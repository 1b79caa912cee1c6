"""Time estimates before work: a cost model per path and this machine's speed.

Cost model, per channel (one operator), with ``S`` splits:

- dense path (attention maps): one factorization of the block ``T[i:, :i]`` per split
  ``i`` and the Gram matrices chained from the middle:
  ``units = L^3 + sum over splits of min(i, L-i)^2 * max(i, L-i)``;
- recurrence path (SSMs, state size ``N``): ``units = L N^2`` to accumulate the
  Gramians (``L N^3`` for a dense ``A``, about ``2 L N^2`` for a delta rule) and
  ``N^3`` per split for their eigenvalues.

Seconds per channel are ``per_split * S + per_unit * units``: both measured once per
process by timing the core's own ``spectra`` and ``recurrence_spectra`` on two small
random problems each (``calibrate``); the per-split term is the latency of the small
solves, which dominates below a few hundred tokens. The estimate covers the spectra, not the forward
pass (much cheaper), and never runs the model.
"""

from __future__ import annotations

import logging
import time

import torch

__all__ = ["calibrate", "seconds", "check_time", "WARN_SECONDS"]

log = logging.getLogger("ess_widgets")

WARN_SECONDS = 30.0
_SPEED: dict[str, tuple[float, float]] = {}


def dense_units(L: int, splits) -> float:
    """``L^3 + sum over splits of min(i, L-i)^2 * max(i, L-i)``, per channel: the Gram
    matrices chained from the middle (``L^3`` whichever splits) and one factorization
    per split (an SVD of the block, or the eigenvalues of its smaller Gram matrix)."""
    total = float(L) ** 3
    for i in splits:
        small, big = min(i, L - i), max(i, L - i)
        total += float(small) * small * big
    return total


def recurrence_units(L: int, N: int, num_splits: int, transition: str = "diagonal") -> float:
    """``L N^2 + len(splits) N^3`` per channel (diagonal ``A``); a dense ``A`` costs
    ``L N^3`` to accumulate, a delta rule (rank-one updates) about ``2 L N^2``."""
    step = {"diagonal": N * N, "delta": 2 * N * N, "dense": N**3}.get(transition, N**3)
    return float(L) * step + float(num_splits) * N**3


def _best_time(run, repeats: int = 2) -> float:
    run()  # warm-up: thread pools, allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-6)


def _fit(samples) -> tuple[float, float]:
    """``(seconds per split, seconds per unit)`` through two ``(splits, units, t)``."""
    (n1, u1, t1), (n2, u2, t2) = samples
    det = n1 * u2 - n2 * u1
    if det == 0:
        return 0.0, t2 / u2
    per_split = (t1 * u2 - t2 * u1) / det
    per_unit = (n1 * t2 - n2 * t1) / det
    # Timing noise can make one term negative: then the larger problem's time goes
    # to the other term alone.
    if per_split < 0:
        per_split, per_unit = 0.0, t2 / u2
    elif per_unit <= 0:
        per_split, per_unit = t2 / n2, 0.0
    return per_split, per_unit


def calibrate(path: str = "dense") -> tuple[float, float]:
    """``(seconds per split, seconds per unit)`` of a path on this machine, per channel,
    measured once per process.

    ``path`` is ``"dense"`` (``spectra`` of one random causal block at L = 48 and 160)
    or ``"recurrence"`` (``recurrence_spectra``, 2 channels, N = 16, L = 64 and 256).
    Each is the fastest of two runs after a warm-up (contention only slows); about a
    second in all on a busy 2-core machine.
    """
    if path in _SPEED:
        return _SPEED[path]
    from ..core import recurrence_spectra, spectra

    g = torch.Generator().manual_seed(0)
    samples = []
    if path == "dense":
        for L in (48, 160):
            T = torch.tril(torch.randn(1, L, L, generator=g, dtype=torch.float64))
            t = _best_time(lambda T=T: spectra(T))
            samples.append((L - 1, dense_units(L, range(1, L)), t))
    elif path == "recurrence":
        C, N = 2, 16
        for L in (64, 256):
            a = 0.9 * torch.rand(C, L, N, generator=g, dtype=torch.float64)
            b, c = torch.randn(2, C, L, N, generator=g, dtype=torch.float64)
            t = _best_time(lambda a=a, b=b, c=c: recurrence_spectra(a, b, c))
            samples.append((C * (L - 1), C * recurrence_units(L, N, L - 1), t))
    else:
        raise ValueError(f"`path` must be 'dense' or 'recurrence', got {path!r}.")
    _SPEED[path] = _fit(samples)
    return _SPEED[path]


def seconds(
    L: int, splits, channels: int, state_size: int | None, transition: str = "diagonal"
) -> float:
    """Estimated seconds of the spectra of one mixer (``channels`` operators)."""
    if state_size is None:
        per_split, per_unit = calibrate("dense")
        units = dense_units(L, splits)
    else:
        per_split, per_unit = calibrate("recurrence")
        units = recurrence_units(L, int(state_size), len(splits), transition)
    return channels * (per_split * len(splits) + per_unit * units)


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
