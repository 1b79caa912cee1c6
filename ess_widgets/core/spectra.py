"""Singular values of split blocks ``T[i:, :i]`` of a dense causal operator.

Two ways to the same numbers:

- ``spectra_ref``: the readable reference, one ``svdvals`` per split.
- ``spectra``: the fast path. ``method="svd"`` runs the same SVDs in parallel;
  ``method="gram"`` takes eigenvalues of the smaller Gram matrix of each block
  (``H^T H`` left of the middle, ``H H^T`` right of it), chained from the
  middle outwards by small matrix products (O(L^3) for all of them).
- ``iter_spectra``: the rows of ``spectra``, split by split, for callers that
  show them as they come and may stop early.

Shapes: ``T`` is ``(..., L, L)``; results are ``(..., S, K)`` with ``K = L // 2``
and one row per requested split (all ``L - 1`` by default, row ``i-1`` holding
the singular values of ``T[..., i:, :i]``), descending, zero-padded past
``min(i, L-i)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from . import _batched
from ._compute import resolve_device, resolve_dtype, split_workers
from ._validation import as_tensor, check_operator
from .splits import normalize_splits

__all__ = ["spectra", "spectra_ref", "iter_spectra"]

METHODS = ("auto", "svd", "gram")


def _prepare(T, dtype, device, check_causal, method=None):
    t = as_tensor(T, "T")
    # An empty batch has nothing above the diagonal (and amax of nothing fails).
    t = check_operator(t, "T", check_causal=check_causal and t.numel() > 0)
    out_device = t.device
    dt = resolve_dtype(dtype)
    if device is not None:
        dev = resolve_device(device)
    elif method == "gram" and t.numel() > 0:
        dev = _default_device(t)
    else:
        # The per-split SVDs are small and latency-bound: measured on an H100 machine,
        # 12 heads x L=512 took 5.8 s on the GPU and 0.5 s on its 16 CPU cores.
        dev = torch.device("cpu")
    return t, t.to(device=dev, dtype=dt), out_device


def _default_device(t: torch.Tensor) -> torch.device:
    """The CPU, unless CUDA is here and a cached measurement says it wins at this size."""
    L = t.shape[-1]
    heads = t.numel() // (L * L)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if _batched.work_of(heads, L) <= _batched.work_of(*_batched._CALIBRATION[0]):
        return torch.device("cpu")  # too small to be worth a calibration
    return _batched.pick_device(heads, L)


def spectra_ref(T, *, splits=None, dtype=None, device=None, check_causal=True) -> torch.Tensor:
    """Singular values of the splits, one plain SVD per split (reference).

    Parameters
    ----------
    T : torch.Tensor or numpy.ndarray, shape (..., L, L)
        Causal operators (lower triangular), rows are outputs, columns inputs.
    splits : optional
        Which splits, as in ``spectra``; all by default.
    dtype : torch.dtype, optional
        Precision of the SVD; float64 by default.
    device : str or torch.device, optional
        Where to compute; the CPU by default (see ``spectra``).
    check_causal : bool, default True
        Refuse operators with entries above the diagonal.

    Returns
    -------
    torch.Tensor, shape (..., S, L // 2)
        Row ``j`` holds ``svdvals(T[..., i:, :i])`` for ``i = splits[j]``
        (row ``i-1`` by default), zero-padded.
    """
    _, t, out_device = _prepare(T, dtype, device, check_causal)
    L = t.shape[-1]
    chosen = normalize_splits(splits, L)
    out = t.new_zeros(*t.shape[:-2], len(chosen), L // 2)
    for row, i in enumerate(chosen):
        if t.numel():
            out[..., row, : min(i, L - i)] = torch.linalg.svdvals(t[..., i:, :i])
    return out.to(out_device)


def spectra(
    T, *, splits=None, method="auto", dtype=None, device=None, check_causal=True
) -> torch.Tensor:
    """Singular values of the split blocks ``T[..., i:, :i]``.

    Parameters
    ----------
    T : torch.Tensor or numpy.ndarray, shape (..., L, L)
        Causal operators (lower triangular): rows are outputs, columns inputs.
        Leading dimensions (heads, channels, batch) are kept; an empty batch gives
        an empty result.
    splits : None, int, range, slice or sequence of int, optional
        Which splits ``i`` to compute (see ``normalize_splits``): ``None`` for all
        ``1 .. L-1``, an int ``k`` for every k-th split (always with ``L - 1``),
        or the splits themselves, in the order wanted. Each row equals the row of
        the same split in the full computation bit for bit on the CPU (same path,
        same precision; the batched CUDA path to rounding), and the cost grows
        with the number of splits asked (``method="gram"`` also chains the Gram
        matrices of the middle splits and of the splits ``1, 9, 17, ...`` from the
        middle to the furthest split asked: O(L^3) memory-bound matrix products,
        about one middle split's eigenvalues; a stride that is a multiple of 8
        asks for chained matrices only). To show rows as they come, and stop
        early, see ``iter_spectra``.
    method : {"auto", "svd", "gram"}, default "auto"
        ``"svd"``: an SVD of every block, exact to the working precision.
        ``"gram"``: eigenvalues of the smaller Gram matrix of every block; about
        3x faster, with an absolute error near ``sqrt(eps) * sigma_1`` (1.5e-8
        ``sigma_1`` in float64), so values far below that are noise. ``T`` is
        scaled by a power of two (exact) before squaring, so entries near the
        ends of the float range (1e-200, 1e300) neither underflow nor overflow.
        ``"auto"`` picks ``"gram"`` when ``T`` has less precision than the
        working dtype (float32 input, float64 work): the input's own rounding
        (6e-8 ``sigma_1``) then dominates the Gram error. Otherwise ``"svd"``.
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute. ``None``: the CPU, also for CUDA input, except for the
        Gram path when CUDA is available and a one-time measurement says the GPU
        is faster at this size (two small problems timed on both devices once per
        process; the CPU modelled as ``gamma * heads * L^4`` seconds, the GPU as
        ``alpha + beta * heads * L^4``). On CUDA the Gram path groups the
        Gram matrices by size (zero-padded by at most 1/8) and solves each group
        as one batch; one small solve per split is latency-bound there (12 heads
        x L=512: 5.8 s on an H100 one at a time, 0.5 s on its 16 CPU cores). The
        SVD path stays one solve per split on any device. ``device="cuda"`` opts
        in (a ValueError when CUDA is not available). The result is returned on
        the device of ``T`` (the CPU for numpy input).
    check_causal : bool, default True
        Raise a ValueError when ``T`` has entries above the diagonal, which usually
        means a transposed or bidirectional operator. ``False`` reads only the
        lower part on purpose.

    Returns
    -------
    torch.Tensor, shape (..., S, L // 2)
        ``S = len(splits)`` (``L - 1`` by default). Row ``j`` holds the singular
        values of ``T[..., i:, :i]`` for ``i = splits[j]`` (row ``i - 1`` by
        default), sorted descending, zero-padded past ``min(i, L-i)``; dtype is
        the working dtype.

    Raises
    ------
    ValueError
        Bad ``T`` (shape, NaN/Inf, not causal), ``splits``, ``method`` or
        ``device``; and singular values that overflow the working dtype (they are
        never returned as Inf or NaN).

    See Also
    --------
    spectra_ref : the one-SVD-per-split reference this function is tested against.
    iter_spectra : the same rows one split at a time (stop whenever).
    recurrence_spectra : the same numbers for a recurrence, without forming T.
    normalize_splits : the accepted forms of ``splits``.
    tolerance_ess, entropy_ess : ESS from these spectra.

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import spectra
    >>> T = torch.tril(torch.ones(6, 6, dtype=torch.float64))  # running sum: state 1
    >>> spectra(T)[:, 0]
    tensor([2.2361, 2.8284, 3.0000, 2.8284, 2.2361], dtype=torch.float64)
    >>> spectra(T).shape
    torch.Size([5, 3])
    >>> spectra(T, splits=[3, 1])[:, 0]
    tensor([3.0000, 2.2361], dtype=torch.float64)
    """
    method, t, out_device = _setup(T, method, dtype, device, check_causal)
    L = t.shape[-1]
    chosen = normalize_splits(splits, L)
    out = t.new_zeros(*t.shape[:-2], len(chosen), L // 2)
    if t.numel() == 0:
        return out.to(out_device)
    rows: dict[int, list[int]] = {}
    for row, i in enumerate(chosen):
        rows.setdefault(i, []).append(row)
    work, items, scaled, scale_exponent = _plan(t, method, set(rows))
    if method == "gram" and _batched.use_batched(t.device):
        # One batched eigensolve per size class instead of one solve per split.
        results = _batched.batched_gram_spectra(
            _gram_sides(scaled, set(rows)),
            L,
            t.shape[:-2],
            _batched.cuda_eigvalsh,
            t.dtype,
            t.device,
        )
        _fill(out, rows, L, results)
    else:
        with split_workers(t.device) as imap:
            _fill(out, rows, L, imap(work, items))
    if scale_exponent is not None:
        out = times_pow2(out, scale_exponent[..., None, None])
    check_finite_result(out, "T")
    return out.to(out_device)


def iter_spectra(
    T, *, splits=None, method="auto", dtype=None, device=None, check_causal=True
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(i, sigma)`` split by split: the rows of ``spectra`` as they are computed.

    For callers that show results as they come and may stop early (the Explorer
    refines a view this way): the input is checked and prepared once, the Gram
    matrices are chained once, and the consumer can stop between any two yields
    (close the generator, or drop it). Splits are computed in batches of
    ``torch.get_num_threads()`` (one per worker thread), so at most that many are
    computed ahead of what was consumed; nothing runs between yields.

    Parameters
    ----------
    T, splits, method, dtype, device, check_causal
        As in ``spectra``.

    Yields
    ------
    i : int
        A requested split, each distinct split once, outwards from the middle
        split (alternating sides), the order the Gram chain builds them in.
    sigma : torch.Tensor, shape (..., L // 2)
        Equal bit for bit to the row of split ``i`` in ``spectra(T, splits=...,
        method=..., dtype=...)`` on the CPU (the same operations on the same
        numbers); on CUDA one solve per split, equal to the batched path of
        ``spectra`` to rounding.

    Raises
    ------
    ValueError
        As ``spectra``; bad input before the first yield.

    Examples
    --------
    >>> import torch
    >>> from ess_widgets.core import iter_spectra
    >>> T = torch.tril(torch.ones(6, 6, dtype=torch.float64))
    >>> [(i, round(float(s[0]), 4)) for i, s in iter_spectra(T, splits=[1, 3, 5])]
    [(3, 3.0), (5, 2.2361), (1, 2.2361)]
    """
    method, t, out_device = _setup(T, method, dtype, device, check_causal)
    L = t.shape[-1]
    wanted = set(normalize_splits(splits, L))
    return _iter_rows(t, method, wanted, out_device)


def _iter_rows(t, method, wanted, out_device):
    # A generator apart from iter_spectra, so that bad input raises at the call.
    L = t.shape[-1]
    if t.numel() == 0:
        for i in _outwards(wanted, L):
            yield i, t.new_zeros(*t.shape[:-2], L // 2).to(out_device)
        return
    work, items, _, scale_exponent = _plan(t, method, wanted, outwards=True)
    # one split per worker thread at a time: a consumer that stops waits for at most one
    ahead = max(torch.get_num_threads(), 1)
    while True:
        # The pool (and the one-thread setting it needs) lives only while a batch
        # computes: nothing is in flight while the consumer holds a row.
        with split_workers(t.device) as imap:
            done = list(imap(work, itertools.islice(items, ahead)))
        if not done:
            return
        for i, s in done:
            row = t.new_zeros(*t.shape[:-2], L // 2)
            row[..., : min(i, L - i)] = s
            if scale_exponent is not None:
                row = times_pow2(row, scale_exponent[..., None])
            check_finite_result(row, "T")
            yield i, row.to(out_device)


def _setup(T, method, dtype, device, check_causal):
    """``(method, t, out_device)``: the method chosen, ``T`` checked and converted to
    the working dtype and device, and the device to return results on."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if method == "auto":
        given = as_tensor(T, "T")
        lower_precision = torch.finfo(given.dtype).eps > torch.finfo(resolve_dtype(dtype)).eps
        method = "gram" if lower_precision else "svd"
    _, t, out_device = _prepare(T, dtype, device, check_causal, method)
    return method, t, out_device


def _plan(t, method, wanted, outwards=False):
    """``(work, items, scaled, scale_exponent)``: ``work(item)`` gives ``(i, sigma)``
    for each of ``items``; for the Gram path ``sigma`` is of ``scaled`` = ``t`` times
    ``2 ** -scale_exponent`` (one exponent per matrix), else both are None.

    ``outwards``: items from the middle split outwards, alternating sides (else the
    left side, then the right side). The order changes no value.
    """
    L = t.shape[-1]
    if method == "svd":
        order = _outwards(wanted, L) if outwards else sorted(wanted)
        return _svdvals, ((i, t[..., i:, :i]) for i in order), None, None
    # An exact power-of-two scaling puts max |T| in [0.5, 1): squares then
    # neither underflow (1e-200) nor overflow (1e300).
    scale_exponent = torch.frexp(t.abs().amax(dim=(-2, -1))).exponent
    scaled = times_pow2(t, -scale_exponent[..., None, None])
    if outwards:
        items = _alternate(*_gram_sides(scaled, wanted))
    else:
        items = _gram_items(scaled, wanted)
    return _sqrt_eigvalsh, items, scaled, scale_exponent


def _outwards(wanted, L):
    """The splits of ``wanted`` from the middle outwards, alternating sides."""
    half = L // 2
    left = sorted((i for i in wanted if i <= half), reverse=True)
    right = sorted(i for i in wanted if i > half)
    return list(_alternate(iter(left), iter(right)))


def _alternate(first, second):
    """Items of two iterators in turn, then the rest of the longer one."""
    for pair in itertools.zip_longest(first, second, fillvalue=_DONE):
        for item in pair:
            if item is not _DONE:
                yield item


_DONE = object()


def _fill(out, rows, L, results):
    for i, s in results:
        for row in rows[i]:
            out[..., row, : min(i, L - i)] = s


def times_pow2(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``x * 2**exponent``, exact; in two factors so that neither overflows."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    two = torch.tensor(2.0, dtype=x.dtype, device=x.device)
    return x * two.pow(half) * two.pow(exponent - half)


def check_finite_result(out: torch.Tensor, name: str, hint: str = "") -> None:
    """Never return Inf or NaN singular values: raise a ValueError naming ``name``."""
    if bool(torch.isfinite(out).all()):
        return
    raise ValueError(
        f"The singular values of `{name}` are not finite in {out.dtype} "
        f"({int((~torch.isfinite(out)).sum())} of {out.numel()} values overflow). "
        + (hint or f"Rescale `{name}` (ESS is scale-free) or compute in float64.")
    )


def _svdvals(item):
    i, block = item
    return i, torch.linalg.svdvals(block)


# The Gram matrices of the middle splits and of every split 1 + k * GRAM_STEP are
# chained from the middle outwards ("anchors"); every other split's is built from the
# nearest anchor nearer the middle by one small matmul. Strides start at split 1, so a
# stride that is a multiple of GRAM_STEP asks for anchors only.
GRAM_STEP = 8


def _sqrt_eigvalsh(item):
    i, gram = _build_gram(item)
    # eigvalsh sorts ascending; rounding can push zero eigenvalues slightly negative.
    return i, torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0).sqrt()


def _build_gram(item):
    """``(i, gram)`` from an item of ``_gram_items``."""
    i, base, block = item
    if block is None:
        return i, base
    if block.shape[-1] == i:  # left of the middle: H^T H, i x i
        return i, base + block.mT @ block
    return i, base + block @ block.mT


def _gram_items(t: torch.Tensor, wanted=None):
    """Yield ``(i, base, block)``: the smaller Gram matrix of ``t[..., i:, :i]`` is
    ``base + block^T block`` (left) or ``base + block block^T`` (right); ``block``
    is None when ``base`` is the Gram matrix itself (``_build_gram`` adds them).

    Left of the middle (i <= L - i) the Gram matrix is ``G_i = H^T H`` (i x i):
    ``G_i = G_c[:i, :i] + T[i:c, :i]^T T[i:c, :i]`` for any ``c > i``. Right of it
    it is ``R_i = H H^T`` ((L-i) x (L-i)): ``R_i = R_r[i-r:, i-r:] + T[i:, r:i]
    T[i:, r:i]^T`` for any ``r < i``. The anchors (the two middle splits, and the
    splits ``1 + k * GRAM_STEP``) are chained from the previous one that way; every
    other split is built from the anchor next to it nearer the middle. Only
    additions, so no cancellation, and all matrix products (BLAS 3).

    ``wanted`` (a set of splits; all by default) only selects what is yielded and
    how far the chains run: each split's Gram matrix comes from the same
    operations on the same numbers whatever is wanted, so it is the same to the bit.
    """
    left, right = _gram_sides(t, wanted)
    yield from left
    yield from right


def _gram_sides(t: torch.Tensor, wanted=None):
    """``(left, right)``: the items of ``_gram_items`` left and right of the middle,
    two generators, each with matrix sizes descending."""
    L = t.shape[-1]
    wanted = set(range(1, L)) if wanted is None else set(wanted)
    return _left_items(t, wanted), _right_items(t, wanted)


def _anchor_below(c: int) -> int:
    """The largest split ``1 + k * GRAM_STEP`` below ``c`` (``c >= 2``)."""
    return 1 + GRAM_STEP * ((c - 2) // GRAM_STEP)


def _anchor_above(r: int) -> int:
    """The smallest split ``1 + k * GRAM_STEP`` above ``r``."""
    return r + GRAM_STEP - (r - 1) % GRAM_STEP


def _left_items(t, wanted):
    """From the middle down: chained G_c at c = half, then the anchors below it."""
    L = t.shape[-1]
    half = L // 2  # last split with i <= L - i
    left = [i for i in wanted if i <= half]
    if not left:
        return
    lowest = min(left)
    head = t[..., half:, :half]
    g, c = head.mT @ head, half
    while True:
        if c in wanted:
            yield c, g, None
        if c == 1:
            return
        a = _anchor_below(c)
        for i in range(c - 1, a, -1):
            if i in wanted:
                yield i, g[..., :i, :i], t[..., i:c, :i]
        if a < lowest:
            return
        block = t[..., a:c, :a]
        g, c = g[..., :a, :a] + block.mT @ block, a


def _right_items(t, wanted):
    """From the middle up: chained R_r at r = half + 1, then the anchors above it."""
    L = t.shape[-1]
    half = L // 2
    right = [i for i in wanted if i > half]
    if not right:
        return
    highest = max(right)
    block = t[..., half + 1 :, : half + 1]
    r_gram, r = block @ block.mT, half + 1
    while True:
        if r in wanted:
            yield r, r_gram, None
        b = _anchor_above(r)
        for i in range(r + 1, min(b, L)):
            if i in wanted:
                yield i, r_gram[..., i - r :, i - r :], t[..., i:, r:i]
        if b > highest:
            return
        block = t[..., b:, r:b]
        r_gram, r = r_gram[..., b - r :, b - r :] + block @ block.mT, b
