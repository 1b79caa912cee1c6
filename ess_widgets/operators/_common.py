"""Input checks and small tensor helpers shared by the operator families.

Every check raises ``ValueError`` or ``TypeError`` naming the argument, what was
expected, what was received, and how to fix it (the same habit as the core).
"""

from __future__ import annotations

import numbers
import operator

import numpy as np
import torch

from ..core._validation import as_tensor, check_finite


def tensor(x, name: str, *, allow_empty: bool = False) -> torch.Tensor:
    """``x`` as a finite, non-empty floating tensor, or an error naming ``name``."""
    t = as_tensor(x, name)
    check_finite(t, name)
    if not allow_empty:
        check_nonempty(t, name)
    return t


def check_nonempty(t: torch.Tensor, name: str) -> None:
    """Raise unless every dimension of ``t`` has at least one entry.

    An empty head, channel or feature axis would give an operator with nothing in
    it (or a third-party error further down); say so at once.
    """
    if t.numel() == 0:
        empty = [d for d, n in enumerate(t.shape) if n == 0]
        raise ValueError(
            f"`{name}` is empty: shape {tuple(t.shape)} has size 0 in dimension(s) "
            f"{empty}. Pass at least one entry along every dimension (one head or "
            "channel, one feature)."
        )


def tensor_like(x, name: str, like: torch.Tensor) -> torch.Tensor:
    """Like ``tensor``, but a Python number takes the dtype and device of ``like``.

    So ``decay=0.9`` next to float32 inputs stays float32 instead of upcasting them.
    """
    if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)):
        # numpy scalars too: np.float32(0.5) is no float, but it is a number.
        t = torch.tensor(float(x), dtype=like.dtype, device=like.device)
        check_finite(t, name)
        return t
    return tensor(x, name)


def promote(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast to one common floating dtype (float32 with float64 gives float64)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def check_ndim(t: torch.Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise unless ``t`` has at least ``ndim`` dimensions (``layout`` names them)."""
    if t.ndim < ndim:
        raise ValueError(
            f"`{name}` must have shape {layout}, got shape {tuple(t.shape)}. Add the "
            "missing dimensions (e.g. `x[None]` or `x.unsqueeze(-1)`)."
        )


def check_size(t: torch.Tensor, name: str, dim: int, size: int, what: str, ref: str) -> None:
    """Raise unless ``t.shape[dim] == size``; ``what`` names the size, ``ref`` its source."""
    if t.shape[dim] != size:
        raise ValueError(
            f"`{name}` has {what} = {t.shape[dim]} (shape {tuple(t.shape)}), but {ref} "
            f"has {what} = {size}. Pass tensors of matching {what}."
        )


def batch_shape(**shapes) -> torch.Size:
    """Broadcast leading (batch, head, channel) shapes, or raise naming all of them."""
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listed = ", ".join(f"`{n}` {tuple(s)}" for n, s in shapes.items())
        raise ValueError(
            f"The leading (batch/head) dimensions do not broadcast: {listed}. Give the "
            "inputs the same leading dimensions, or size 1 where one is shared."
        ) from None


def check_length(L, name: str = "L") -> int:
    """A sequence length: an int >= 2 (a split needs two positions)."""
    if isinstance(L, bool):
        raise TypeError(f"`{name}` must be an int, got bool.")
    try:
        L = operator.index(L)
    except TypeError:
        raise TypeError(f"`{name}` must be an int, got {type(L).__name__}.") from None
    if L < 2:
        raise ValueError(f"`{name}` must be at least 2 to have a split, got {name} = {L}.")
    return L


def check_length_of(t: torch.Tensor, name: str, dim: int) -> int:
    """The sequence length ``t.shape[dim]``, which must be at least 2."""
    L = t.shape[dim]
    if L < 2:
        raise ValueError(
            f"`{name}` has sequence length L = {L} (shape {tuple(t.shape)}); a split needs L >= 2."
        )
    return L


def check_unit_interval(t: torch.Tensor, name: str, fix: str) -> None:
    """Raise unless every entry lies in (0, 1]: decays and gates must shrink the state."""
    bad = (t <= 0) | (t > 1)
    if bool(bad.any()):
        raise ValueError(
            f"`{name}` must lie in (0, 1], got {int(bad.sum())} entries outside it "
            f"(min {float(t.min()):.3g}, max {float(t.max()):.3g}). {fix}"
        )


def full_tss(L: int, value, device=None) -> torch.Tensor:
    """A constant TSS, int64 of shape ``(L-1,)``."""
    return torch.full((L - 1,), int(value), dtype=torch.int64, device=device)


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Segment sums ``S[..., i, j] = sum_{t=j+1..i} x[..., t]``, -inf above the diagonal.

    ``x`` is ``(..., L)``; the result ``(..., L, L)``. Each entry is summed from its own
    terms (as in mamba's ``ssd_minimal.segsum``) instead of as a difference of two
    cumulative sums, which would lose the small sums next to the diagonal to
    cancellation. With ``x`` a log-decay, ``exp(segsum(x))`` is the causal decay mask.
    """
    L = x.shape[-1]
    ones = torch.ones(L, L, dtype=torch.bool, device=x.device)
    rep = x[..., :, None].expand(*x.shape, L)  # rep[..., i, j] = x_i
    rep = rep.masked_fill(~torch.tril(ones, -1), 0.0)  # keep x_i for i > j only
    out = torch.cumsum(rep, dim=-2)
    return out.masked_fill(~torch.tril(ones), -torch.inf)


def toeplitz(h: torch.Tensor, L: int) -> torch.Tensor:
    """Causal Toeplitz matrices ``T[..., i, j] = h[..., i - j]`` (zero past the kernel).

    ``h`` is ``(..., m)``; entries ``h[..., L:]`` never reach an ``L x L`` matrix.
    """
    m = min(h.shape[-1], L)
    padded = h.new_zeros(*h.shape[:-1], L)
    padded[..., :m] = h[..., :m]
    lag = torch.arange(L, device=h.device)
    lag = lag[:, None] - lag[None, :]
    T = padded[..., lag.clamp(min=0)]
    return T.masked_fill(lag < 0, 0.0)
