"""Which splits to compute: ``normalize_splits`` turns every accepted form into a list."""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["normalize_splits"]


def _is_int(x) -> bool:
    # bool is an int to Python, but True as a split is a bug, not split 1.
    if isinstance(x, (bool, np.bool_)):
        return False
    return isinstance(x, (numbers.Integral, np.integer))


def normalize_splits(splits, L: int) -> list[int]:
    """The split indices ``i`` (blocks ``T[i:, :i]``) that ``splits`` asks for.

    Parameters
    ----------
    splits : None, int, range, slice or sequence of int
        - ``None``: every split, ``1 .. L-1``.
        - an int ``k >= 1``: a stride, every k-th split ``1, 1 + k, 1 + 2k, ...``,
          always ending with the last split ``L - 1`` (so ``k = 1`` is every split).
        - a ``range`` or a sequence of ints (list, tuple, 1-D integer array or
          tensor): those splits, in the order given (repeats allowed).
        - a ``slice``: the split numbers ``range(L)[splits]``, with a missing start
          meaning split 1 for a positive step (``slice(None, None, 8)`` is
          ``1, 9, 17, ...``) and a missing stop split 1 for a negative step;
          negative bounds count from ``L`` as in indexing.
    L : int
        Sequence length (the operator is ``L x L``), at least 2.

    Returns
    -------
    list of int
        Split indices, each in ``1 .. L-1``, in the requested order; never empty.

    Raises
    ------
    ValueError
        Naming ``splits``: a split outside ``1 .. L-1``, a stride below 1, an empty
        selection, or something that is not an integer (floats and bools too).

    Examples
    --------
    >>> from ess_widgets import normalize_splits
    >>> normalize_splits(4, 12)
    [1, 5, 9, 11]
    >>> normalize_splits(range(2, 12, 3), 12)
    [2, 5, 8, 11]
    >>> normalize_splits(slice(-3, None), 12)
    [9, 10, 11]
    """
    L = int(L)
    if L < 2:
        raise ValueError(f"A sequence of length L = {L} has no split; `splits` needs L >= 2.")
    if splits is None:
        return list(range(1, L))
    if _is_int(splits):
        stride = int(splits)
        if stride < 1:
            raise ValueError(
                f"`splits` as an int is a stride (every k-th split) and must be >= 1, got "
                f"{stride}. Pass a list of split indices for specific splits."
            )
        chosen = list(range(1, L, stride))
        if chosen[-1] != L - 1:
            chosen.append(L - 1)
        return chosen
    if isinstance(splits, slice):
        start, stop = splits.start, splits.stop
        forward = splits.step is None or (_is_int(splits.step) and splits.step > 0)
        if start is None and forward:
            start = 1
        if stop is None and not forward:
            stop = 0  # runs down to split 1, never to the non-split 0
        try:
            chosen = list(range(L)[slice(start, stop, splits.step)])
        except (TypeError, ValueError) as err:
            raise ValueError(f"`splits` is not a valid slice of split indices: {err}.") from None
        if not chosen:
            raise ValueError(
                f"`splits` = {splits!r} selects no split of 1 .. {L - 1} (L = {L}); pass a "
                "slice, range or list that selects at least one."
            )
        _check_range(chosen, L)
        return chosen
    if isinstance(splits, (str, bytes)):
        raise ValueError(
            f"`splits` must be an int stride, a range, a slice or a sequence of ints, got a "
            f"{type(splits).__name__} ({splits!r})."
        )
    if isinstance(splits, torch.Tensor):
        splits = splits.detach().cpu().numpy()
    if isinstance(splits, np.ndarray):
        if splits.ndim != 1:
            raise ValueError(
                f"`splits` as an array must be 1-D, got shape {splits.shape}; pass a flat "
                "list of split indices."
            )
        if splits.dtype.kind not in "iu":
            raise ValueError(
                f"`splits` must hold integers, got an array of dtype {splits.dtype}. Round or "
                "cast it with .astype(int) if the values are whole numbers."
            )
        splits = splits.tolist()
    try:
        items = list(splits)
    except TypeError:
        raise ValueError(
            f"`splits` must be None, an int stride, a range, a slice or a sequence of ints, "
            f"got {type(splits).__name__}."
        ) from None
    if not items:
        raise ValueError("`splits` is empty: ask for at least one split (or None for every split).")
    bad = [x for x in items if not _is_int(x)]
    if bad:
        raise ValueError(
            f"`splits` must hold integers (split indices 1 .. {L - 1}), got {bad[0]!r} of "
            f"type {type(bad[0]).__name__}."
        )
    chosen = [int(x) for x in items]
    _check_range(chosen, L)
    return chosen


def _check_range(chosen: list[int], L: int) -> None:
    outside = [i for i in chosen if not 1 <= i <= L - 1]
    if outside:
        raise ValueError(
            f"`splits` must lie in 1 .. L-1 = 1 .. {L - 1} (split i is the block "
            f"T[i:, :i]), got {outside[0]}{' and others' if len(outside) > 1 else ''}."
        )
