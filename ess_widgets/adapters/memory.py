"""The memory guard: estimate before allocating, and say how to shorten.

Dense operators grow like ``C L^2`` (float64: 8 bytes an entry), so a long text
on a wide layer can ask for more memory than the machine has. Every entry point
estimates its bytes first (``Footprint`` of each adapter) and raises a
ValueError naming the longest input that fits the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .base import GiB, format_bytes

__all__ = ["DEFAULT_MEMORY_BUDGET", "check_budget", "max_length", "require"]

DEFAULT_MEMORY_BUDGET = 2 * GiB


def check_budget(budget) -> int:
    """A memory budget in bytes: a finite number > 0 (None: the default)."""
    if budget is None:
        return DEFAULT_MEMORY_BUDGET
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise TypeError(
            f"`memory_budget` must be a number of bytes, got {type(budget).__name__}."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`memory_budget` must be a finite number of bytes > 0, got {budget!r} "
            "(e.g. memory_budget=4 * 2**30 for 4 GiB)."
        )
    return int(value)


def max_length(need: Callable[[int], int], budget: int, upper: int) -> int:
    """The largest ``L`` in ``[2, upper]`` with ``need(L) <= budget``, or 0 if none.

    ``need`` must grow with ``L``.

    Examples
    --------
    >>> max_length(lambda L: 8 * L * L, 800, 1000)
    10
    """
    if need(2) > budget:
        return 0
    lo, hi = 2, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def require(what: str, need: Callable[[int], int], L: int, budget: int, remedy: str = "") -> None:
    """Raise a ValueError when ``need(L)`` bytes exceed ``budget``.

    Parameters
    ----------
    what : str
        What needs the memory, for the message (``"layer 3 (9 heads)"``).
    need : callable
        Bytes as a function of the sequence length.
    L : int
        The sequence length asked for.
    budget : int
        Bytes allowed.
    remedy : str, optional
        Another way out, appended to the message.
    """
    bytes_needed = need(L)
    if bytes_needed <= budget:
        return
    fits = max_length(need, budget, L)
    shorten = (
        f"Shorten the input to at most {fits} tokens" if fits >= 2 else "Not even 2 tokens fit"
    )
    raise ValueError(
        f"{what} at L = {L} tokens needs about {format_bytes(bytes_needed)}, over the "
        f"memory budget of {format_bytes(budget)}. {shorten}, {remedy}or raise the "
        "budget (memory_budget=... in bytes, on load() or this call)."
    )
