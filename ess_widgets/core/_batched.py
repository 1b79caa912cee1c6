"""Batched eigensolves of the split Gram matrices (the GPU path of ``spectra``).

One solve per split is latency-bound on a GPU: torch solves matrices above 32 x 32
one at a time, so 12 heads x L=512 took 5.8 s on an H100 against 0.5 s on its 16 CPU
cores. Here the Gram matrices of all requested splits are grouped by size class
and each group goes to the solver as one batch:

1. the matrices come largest first (left and right of the middle merged), so a
   group is complete as soon as a smaller size class starts, and only one group
   lives at a time (also capped at ``_GROUP_BYTES``);
2. a matrix of size m joins the class ``padded_size(m) >= m`` (at most 1/8 larger)
   and is zero-padded at the bottom right: ``[[G, 0], [0, 0]]`` has the
   eigenvalues of ``G`` plus ``n - m`` zeros;
3. after the solve the ``n - m`` extra eigenvalues are dropped: the top m of the
   padded spectrum are those of ``G`` except that eigenvalues of ``G`` that are
   zero up to rounding (slightly negative) are replaced by exact zeros, which the
   clamp at zero makes the same.

The solver is a function ``(..., n, n) -> (..., n)`` ascending eigenvalues:
``torch.linalg.eigvalsh`` by default (CuPy's when importable, for CUDA groups of
matrices above 32 x 32, where torch loops). The CPU tests run this grouping and
padding with torch's CPU solver and compare it with the plain path.
"""

from __future__ import annotations

import heapq
import time

import torch

# Largest group (bytes of padded matrices) sent to the solver at once.
_GROUP_BYTES = 512 * 2**20


def padded_size(m: int) -> int:
    """The size class of an m x m matrix: m rounded up to a multiple of a power of two
    at most m / 8 (exact below 16), so padding adds at most 1/8 of the size."""
    quantum = 1 << max(0, m.bit_length() - 4)
    return -(-m // quantum) * quantum


def batched_gram_spectra(items, L, batch_shape, solver, dtype, device):
    """``{split: singular values}`` from Gram items, solving one group per size class.

    Parameters
    ----------
    items : iterable of (left_items, right_items)
        The two sequences of ``(i, base, block)`` from ``_gram_items`` (each with
        sizes descending).
    L : int
    batch_shape : tuple
        Leading dimensions of ``T``.
    solver : callable
        ``(count, ..., n, n) -> (count, ..., n)`` ascending eigenvalues.

    Yields
    ------
    (i, sigma) with sigma of shape ``(..., min(i, L - i))``, descending.
    """
    from .spectra import _build_gram

    def size(item):
        return min(item[0], L - item[0])

    merged = heapq.merge(*items, key=lambda item: -size(item))
    group, group_n = [], None
    item_bytes = torch.finfo(dtype).bits // 8 * max(1, _prod(batch_shape))
    for item in merged:
        n = padded_size(size(item))
        if group and (n != group_n or (len(group) + 1) * n * n * item_bytes > _GROUP_BYTES):
            yield from _solve_group(group, group_n, L, batch_shape, solver, dtype, device)
            group = []
        group_n = n
        group.append(_build_gram(item))
    if group:
        yield from _solve_group(group, group_n, L, batch_shape, solver, dtype, device)


def _prod(shape):
    out = 1
    for x in shape:
        out *= x
    return out


def _solve_group(group, n, L, batch_shape, solver, dtype, device):
    padded = torch.zeros(len(group), *batch_shape, n, n, dtype=dtype, device=device)
    for j, (i, gram) in enumerate(group):
        m = min(i, L - i)
        padded[j, ..., :m, :m] = gram
    eig = solver(padded)  # ascending
    for j, (i, _) in enumerate(group):
        m = min(i, L - i)
        yield i, eig[j].flip(-1)[..., :m].clamp_min(0).sqrt()


def use_batched(device: torch.device) -> bool:
    """Whether the Gram path groups its solves (on CUDA; the CPU has its split workers)."""
    return device.type == "cuda"


def cuda_eigvalsh(x: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of a CUDA batch: CuPy's batched solver when importable
    and the matrices exceed 32 x 32 (torch's batched syevj covers those up to 32),
    else torch's. CuPy is optional: any failure there falls back to torch."""
    if x.shape[-1] > 32 and x.ndim > 2:
        try:
            import cupy

            w = cupy.linalg.eigvalsh(cupy.from_dlpack(x.contiguous()))
            return torch.from_dlpack(w)
        except Exception:  # optional accelerator: torch is the fallback
            pass
    return torch.linalg.eigvalsh(x)


# --- device=None: the CPU unless a one-time measurement says CUDA wins -----------------

# (heads, L) of the two calibration problems; the CPU cost grows like heads * L^4.
_CALIBRATION = ((4, 64), (4, 192))
_calibrated: dict = {}


def work_of(batch_count: int, L: int) -> float:
    """The cost model both devices are compared on: heads * L^4."""
    return float(batch_count) * float(L) ** 4


def pick_device(batch_count: int, L: int, measure=None) -> torch.device:
    """The faster device for the Gram path at this size, by a cached measurement.

    Without CUDA: the CPU. With CUDA, once per process, two small problems are
    timed on both devices; the CPU time is modelled as ``gamma * work`` and the GPU
    time as ``alpha + beta * work`` (a launch and synchronisation overhead, then
    throughput), and CUDA is picked when the model says it is faster for this
    ``work = heads * L^4``. ``measure(device, heads, L) -> seconds`` replaces the
    timing (for tests).
    """
    if not torch.cuda.is_available() and measure is None:
        return torch.device("cpu")
    if measure is not None:
        alpha, beta, gamma = _fit(measure)
    else:
        if "model" not in _calibrated:
            _calibrated["model"] = _fit(_measure)
        alpha, beta, gamma = _calibrated["model"]
    work = work_of(batch_count, L)
    return torch.device("cuda" if alpha + beta * work < gamma * work else "cpu")


def _fit(measure):
    (h1, l1), (h2, l2) = _CALIBRATION
    w1, w2 = work_of(h1, l1), work_of(h2, l2)
    cpu1, cpu2 = measure("cpu", h1, l1), measure("cpu", h2, l2)
    gpu1, gpu2 = measure("cuda", h1, l1), measure("cuda", h2, l2)
    gamma = max(cpu1 / w1, cpu2 / w2)
    beta = max((gpu2 - gpu1) / (w2 - w1), 0.0)
    alpha = max(gpu1 - beta * w1, 0.0)
    return alpha, beta, gamma


def _measure(device: str, heads: int, L: int) -> float:
    from .spectra import spectra

    g = torch.Generator().manual_seed(0)
    # On the CPU, as most inputs are: the GPU's time includes the transfers.
    T = torch.tril(torch.rand(heads, L, L, generator=g, dtype=torch.float64))
    spectra(T[:1, :16, :16], method="gram", device=device)  # warm-up: context, handles
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    spectra(T, method="gram", device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
