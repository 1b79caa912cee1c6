"""Where and in what precision singular values are computed, and the split workers."""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch


def resolve_device(device=None) -> torch.device:
    """CUDA when available, else the CPU; ``device`` overrides.

    Raises a ValueError naming ``device`` for a name torch does not know, and for
    a CUDA device on a machine (or torch build) without CUDA.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"`device` must be a torch device such as 'cpu' or 'cuda', got {device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"`device` = {device!r} asks for CUDA, but CUDA is not available here (no GPU, "
            "or a CPU-only torch build). Use device='cpu' or device=None."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"`device` = {device!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    return dev


def resolve_dtype(dtype=None) -> torch.dtype:
    """float64 unless the caller asks otherwise."""
    if dtype is None:
        return torch.float64
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"`dtype` must be a real floating torch dtype, got {dtype!r}.")
    if dtype in (torch.float16, torch.bfloat16):
        # LAPACK and cuSOLVER have no half-precision solvers.
        return torch.float32
    return dtype


@contextlib.contextmanager
def split_workers(device: torch.device):
    """Yield ``imap(fn, items)``: results of ``fn`` over ``items``, in order.

    On the CPU, LAPACK on the small per-split matrices barely uses more than one
    core, so one single-threaded call per core beats one multi-threaded call at a
    time (measured: 1.8x on 2 cores). The global torch thread count is restored.
    On CUDA the calls are queued asynchronously and a plain ``map`` is used.
    At most two tasks per worker are in flight, so ``items`` may be a generator
    of large matrices that must not all live at once.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n < 2:
        yield map
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:

            def imap(fn, items):
                pending = deque()
                for item in items:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= 2 * n:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()

            yield imap
    finally:
        torch.set_num_threads(n)
