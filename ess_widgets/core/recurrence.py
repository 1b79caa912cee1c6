"""Split spectra of a linear recurrence, without forming its L x L operator.

The recurrence (one channel; leading dimensions are batch)::

    x_t = A_t x_(t-1) + b_t u_t,    y_t = c_t . x_t,    x_(-1) = 0

has the causal operator ``T[t, j] = c_t^T A_t ... A_(j+1) b_j`` (``j <= t``).
At a split ``i`` the block factors as ``H_i = T[i:, :i] = O_i R_i`` with

- reachability ``R_i`` (N x i), column j: ``A_(i-1) ... A_(j+1) b_j``, and
- observability ``O_i`` ((L-i) x N), row t: ``c_t^T A_t ... A_i``.

Their Gramians obey ``P_(i+1) = A_i P_i A_i^T + b_i b_i^T`` (with ``P_0 = 0``) and
``Q_i = A_i^T (c_i c_i^T + Q_(i+1)) A_i`` (with ``Q_L = 0``), and
``sigma(H_i)^2 = eig(P_i Q_i)``. We carry square-root factors instead,
``P_i = S_i S_i^T`` and ``Q_i = Z_i^T Z_i`` (N x N, one small QR per step), so that
``sigma(H_i) = svdvals(Z_i S_i)`` keeps small singular values accurate.
Cost O(L N^3) per channel; nothing of size L x L is formed.

Memory: the forward factors ``S_i`` of the requested splits are kept until the
backward sweep reaches them. When they would exceed ``_FACTOR_BYTES`` per chunk of
channels, only every ``ceil(sqrt(L))``-th one is kept and the others are recomputed
segment by segment (the same operations on the same numbers, so the same bits),
for about 1.5x the QR work and O(sqrt(L) N^2) memory per channel.
"""

from __future__ import annotations

import math

import torch

from ._compute import resolve_device, resolve_dtype, split_workers
from ._validation import as_tensor, check_dense_size, check_finite
from .splits import normalize_splits

__all__ = ["recurrence_spectra", "recurrence_operator", "recurrence_bytes"]

TRANSITIONS = (None, "diagonal", "dense")

# Channels per chunk: about this much working memory for the N x N factors at every
# split of a chunk (the same chunking whatever splits are asked, so the same bits).
_CHUNK_BYTES = 256 * 2**20
# Keep every requested forward factor when they fit in this (per chunk of channels);
# above it, keep checkpoints and recompute segments in the backward sweep.
_FACTOR_BYTES = 128 * 2**20


def _shape_error(a, b, kind):
    L, N = b.shape[-2:]
    expected = (L, N) if kind == "diagonal" else (L, N, N)
    return ValueError(
        f"`a` ({kind} A_t) must end in {expected} to match `b` of shape "
        f"{tuple(b.shape)}, got shape {tuple(a.shape)}."
    )


def _lead(x, tail):
    return tuple(x.shape[: x.ndim - tail])


def _broadcast(*shapes):
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        return None


def _infer_transition(a, b, c):
    """``"diagonal"`` or ``"dense"`` from the shapes, when only one reading fits.

    A reading fits when ``a`` ends in ``(L, N)`` (diagonal) or ``(L, N, N)``
    (dense) and its leading dimensions broadcast with those of ``b`` and ``c``.
    Both can fit only when ``L == N`` (and ``a.shape[-3] == L``); then this never
    guesses: a ValueError asks for ``transition=``.
    """
    L, N = b.shape[-2:]
    fits = []
    for kind, tail in (("diagonal", 2), ("dense", 3)):
        ends = a.ndim >= tail and tuple(a.shape[-tail:]) == ((L, N) if tail == 2 else (L, N, N))
        if ends and _broadcast(_lead(a, tail), _lead(b, 2), _lead(c, 2)) is not None:
            fits.append(kind)
    if len(fits) == 1:
        return fits[0]
    if len(fits) == 2:
        raise ValueError(
            f"`a` of shape {tuple(a.shape)} with `b` {tuple(b.shape)} and `c` "
            f"{tuple(c.shape)} reads both as diagonal A_t (..., L, N) and as dense A_t "
            f"(..., L, N, N), since L = N = {N}. Pass transition='diagonal' or "
            "transition='dense'."
        )
    # Neither fits: explain against the likelier reading.
    if a.ndim < 2:
        raise ValueError(
            f"`a` must have shape (..., L, N) for diagonal A_t or (..., L, N, N) for "
            f"dense A_t, to match `b` {tuple(b.shape)}; got shape {tuple(a.shape)}."
        )
    dense_like = a.ndim == max(b.ndim, c.ndim) + 1 or (
        a.ndim >= 3 and tuple(a.shape[-3:]) == (L, N, N)
    )
    kind = "dense" if dense_like else "diagonal"
    tail = 3 if dense_like else 2
    if a.ndim >= tail and tuple(a.shape[-tail:]) == ((L, N, N) if dense_like else (L, N)):
        raise _batch_error(_lead(a, tail), _lead(b, 2), _lead(c, 2))
    raise _shape_error(a, b, kind)


def _batch_error(*leads):
    return ValueError(
        "The leading (channel/batch) dimensions of `a`, `b`, `c` do not broadcast: "
        + ", ".join(str(tuple(x)) for x in leads)
        + ". Shared vectors may omit leading dimensions or give them size 1."
    )


def _check_recurrence(a, b, c, transition=None):
    """Validate; return ``(a, b, c, kind, batch)`` with ``kind`` the transition type."""
    if transition not in TRANSITIONS:
        raise ValueError(
            f"`transition` must be one of {TRANSITIONS}, got {transition!r}: 'diagonal' "
            "when `a` is (..., L, N), 'dense' when it is (..., L, N, N), None to infer."
        )
    b, c = (as_tensor(x, n) for x, n in ((b, "b"), (c, "c")))
    for x, n in ((b, "b"), (c, "c")):
        check_finite(x, n)
    if b.ndim < 2:
        raise ValueError(
            f"`b` must have shape (..., L, N), got shape {tuple(b.shape)}: one input "
            "vector b_t of length N per time step."
        )
    L, N = b.shape[-2:]
    if c.ndim < 2 or tuple(c.shape[-2:]) != (L, N):
        raise ValueError(
            f"`c` must have shape (..., L, N) = (..., {L}, {N}) to match `b`, got shape "
            f"{tuple(c.shape)}."
        )
    if _is_delta(a):
        if transition is not None:
            raise ValueError(
                "`transition` must be None when `a` is a DeltaTransition (it is its own "
                f"kind), got {transition!r}."
            )
        if (a.L, a.N) != (L, N):
            raise ValueError(
                f"`a` (a DeltaTransition with L = {a.L}, N = {a.N}) must match `b` of "
                f"shape {tuple(b.shape)} (L = {L}, N = {N})."
            )
        kind, a_lead = "delta", a.batch_shape
    else:
        a = as_tensor(a, "a")
        check_finite(a, "a")
        kind = transition or _infer_transition(a, b, c)
        tail = 2 if kind == "diagonal" else 3
        if a.ndim < tail or tuple(a.shape[-tail:]) != ((L, N) if tail == 2 else (L, N, N)):
            raise _shape_error(a, b, kind)
        a_lead = _lead(a, tail)
    if L < 2:
        raise ValueError(f"The recurrence needs L >= 2 time steps to have a split, got L = {L}.")
    batch = _broadcast(a_lead, _lead(b, 2), _lead(c, 2))
    if batch is None:
        raise _batch_error(a_lead, _lead(b, 2), _lead(c, 2))
    return a, b, c, kind, batch


def _is_delta(a) -> bool:
    from .delta import DeltaTransition

    return isinstance(a, DeltaTransition)


def _transition_parts(a, kind):
    """``[(tensor, tail_ndim), ...]``: the tensors that make up the transitions."""
    if kind == "delta":
        return [(a.decay, 2 if a.per_channel else 1), (a.beta, 1), (a.k, 2)]
    return [(a, 2 if kind == "diagonal" else 3)]


class _Chunks:
    """Pieces of the broadcast batch, flattened, without copying shared tensors.

    A tensor whose leading dimensions are all 1 is used as ``(1, *tail)`` for every
    chunk (broadcast in the arithmetic); others are gathered chunk by chunk, so a
    dense ``A`` shared by all channels is never copied per channel.
    """

    def __init__(self, batch, parts, device, dtype):
        self.batch = batch
        self.parts = [(x.to(device=device, dtype=dtype), tail) for x, tail in parts]

    def take(self, start, stop):
        idx = None
        if self.batch:
            flat = torch.arange(start, stop)
            idx = torch.unravel_index(flat, self.batch)
        out = []
        for x, tail in self.parts:
            tail_shape = x.shape[x.ndim - tail :]
            if math.prod(_lead(x, tail)) == 1:
                out.append(x.reshape(1, *tail_shape))
            else:
                out.append(x.expand(*self.batch, *tail_shape)[idx])
        return out


def recurrence_spectra(
    a, b, c, *, splits=None, transition=None, dtype=None, device=None
) -> torch.Tensor:
    """Singular values of the splits of a recurrence's operator, in O(L N^3).

    Parameters
    ----------
    a : torch.Tensor, numpy.ndarray or DeltaTransition
        The transitions ``A_t``: shape ``(..., L, N)`` for diagonal ``A_t`` (one
        row of N entries per step), ``(..., L, N, N)`` for dense ``A_t``, or a
        ``DeltaTransition`` (``(I - beta_t k_t k_t^T) diag(decay_t)``, applied in
        that form: its ``(L, N, N)`` matrices are never formed). ``A_0`` acts on
        the zero initial state and never matters.
    b : torch.Tensor or numpy.ndarray, shape (..., L, N)
        Input vectors ``b_t``.
    c : torch.Tensor or numpy.ndarray, shape (..., L, N)
        Output vectors ``c_t``.
    splits : None, int, range, slice or sequence of int, optional
        Which splits to return (see ``normalize_splits``); all ``1 .. L-1`` by
        default. The factor sweeps still run over the steps they need, but only
        the requested splits' factors are kept and taken SVDs of; each row equals
        the same split's row of the full result bit for bit (on the CPU).
    transition : {None, "diagonal", "dense"}, optional
        How to read a tensor ``a``. ``None`` infers it from the shapes when only
        one reading fits (``a`` ends in ``(L, N)`` or ``(L, N, N)`` and its leading
        dimensions broadcast with those of ``b`` and ``c``). Both can fit only when
        ``L == N`` and ``a.shape[-3] == L`` (for example a dense ``A`` of shape
        ``(L, N, N)`` shared by ``b``, ``c`` of shape ``(C, L, N)`` with
        ``C == L == N``, or ``C == 1``); then a ValueError asks for this keyword.
        Code that builds recurrences should always pass it.
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute; CUDA when available by default. The result is returned
        on the device of ``b``.

    Returns
    -------
    torch.Tensor, shape (..., S, min(N, L // 2))
        ``S = len(splits)`` (``L - 1`` by default). Row ``j`` holds the singular
        values of ``T[..., i:, :i]`` for ``i = splits[j]`` (row ``i - 1`` by
        default) sorted descending, exactly zero past ``min(i, L-i, N)``. Leading
        dimensions are the broadcast of those of ``a``, ``b``, ``c``; an empty
        batch gives an empty result.

    Raises
    ------
    ValueError
        Disagreeing shapes, an ambiguous ``a`` without ``transition``, NaN/Inf in
        the inputs, bad ``splits`` or ``device``, and an unstable recurrence whose
        singular values overflow the working dtype (the message names ``a`` and
        gives its largest ``|A_t|``): Inf or NaN is never returned.

    See Also
    --------
    recurrence_operator : the dense ``T`` of the same recurrence.
    spectra : the dense path, which this function matches.
    recurrence_bytes : the working memory this function needs.
    DeltaTransition : delta-rule transitions in their rank-one form.

    Examples
    --------
    A leaky running sum has one state, so one singular value per split:

    >>> import torch
    >>> from ess_widgets import recurrence_operator, recurrence_spectra, spectra
    >>> L = 8
    >>> a = torch.full((L, 1), 0.5, dtype=torch.float64)
    >>> b = c = torch.ones(L, 1, dtype=torch.float64)
    >>> s = recurrence_spectra(a, b, c)
    >>> s.shape
    torch.Size([7, 1])
    >>> torch.allclose(s, spectra(recurrence_operator(a, b, c))[:, :1])
    True
    >>> recurrence_spectra(a, b, c, splits=[4]).shape
    torch.Size([1, 1])
    """
    a, b, c, kind, batch = _check_recurrence(a, b, c, transition)
    out_device = b.device
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    L, N = b.shape[-2:]
    chosen = normalize_splits(splits, L)
    K = min(N, L // 2)
    channels = math.prod(batch)
    if channels == 0:
        return torch.zeros(*batch, len(chosen), K, dtype=dt, device=out_device)
    kept = sorted(set(chosen))
    chunks = _Chunks(batch, [*_transition_parts(a, kind), (b, 2), (c, 2)], dev, dt)
    chunk = _channels_per_chunk(L, N, channels, dev, dt)
    item = torch.finfo(dt).bits // 8
    checkpoint = chunk * len(kept) * N * N * item > _FACTOR_BYTES
    with split_workers(dev) as imap:
        parts = list(
            imap(
                lambda k: _sqrt_gramian_spectra(
                    *chunks.take(k, min(k + chunk, channels)),
                    kind=kind,
                    kept=kept,
                    checkpoint=checkpoint,
                ),
                range(0, channels, chunk),
            )
        )
    out = torch.cat(parts)  # (channels, len(kept), K)
    position = {i: j for j, i in enumerate(kept)}
    out = out[:, [position[i] for i in chosen]]
    if not bool(torch.isfinite(out).all()):
        raise _unstable_error(a, b, c, kind, dt)
    return out.reshape(*batch, len(chosen), K).to(out_device)


def _channels_per_chunk(L, N, channels, dev, dt):
    """Channels per chunk; depends on the sizes, never on the splits asked."""
    per_channel = max(1, 2 * L * N * N * torch.finfo(dt).bits // 8)  # N = 0: no state
    chunk = max(1, _CHUNK_BYTES // per_channel)
    if dev.type == "cpu":  # one chunk per core at least, for the split workers
        chunk = min(chunk, -(-channels // torch.get_num_threads()))
    return chunk


def recurrence_bytes(
    L, N, channels, *, transition="diagonal", dtype=torch.float64, splits=None, device=None
) -> int:
    """Peak working memory of ``recurrence_spectra`` in bytes, beyond its inputs.

    For memory estimates before any work (the model adapters call it). It counts
    the result, and for every chunk of channels in flight at once (one per CPU
    core, one on CUDA): the chunk's gathered inputs, the forward factors kept
    (every requested split's, or checkpoints plus one segment above
    ``_FACTOR_BYTES``) and the per-step temporaries. The inputs themselves and
    the caller's copies are not counted.

    Parameters
    ----------
    L, N : int
        Sequence length and state size.
    channels : int
        Number of independent recurrences (the broadcast batch size).
    transition : {"diagonal", "dense", "delta"}, default "diagonal"
        Per channel, the gathered ``A`` costs ``L N`` (diagonal), ``L N^2``
        (dense) or ``L (2N + 1)`` (a ``DeltaTransition``: never ``L N^2``).
    dtype : torch.dtype, default torch.float64
        Working precision.
    splits : optional
        As in ``recurrence_spectra`` (all splits by default).
    device : str or torch.device, optional
        As in ``recurrence_spectra`` (CUDA when available by default); it sets how
        many chunks are in flight.

    Returns
    -------
    int

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import recurrence_bytes
    >>> delta = recurrence_bytes(2048, 128, 1, transition="delta", device="cpu")
    >>> dense = recurrence_bytes(2048, 128, 1, transition="dense", device="cpu")
    >>> delta < 64 * 2**20 < dense
    True
    """
    kinds = ("diagonal", "dense", "delta")
    if transition not in kinds:
        raise ValueError(f"`transition` must be one of {kinds}, got {transition!r}.")
    for value, name in ((L, "L"), (N, "N"), (channels, "channels")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    if L < 2:
        raise ValueError(f"The recurrence needs L >= 2 time steps to have a split, got L = {L}.")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    item = torch.finfo(dt).bits // 8
    kept = len(set(normalize_splits(splits, L)))
    K = min(N, L // 2)
    result = 2 * channels * kept * K * item  # the per-chunk parts and their concatenation
    if channels == 0:
        return result
    chunk = _channels_per_chunk(L, N, channels, dev, dt)
    in_flight = min(-(-channels // chunk), torch.get_num_threads() if dev.type == "cpu" else 1)
    a_size = {"diagonal": L * N, "dense": L * N * N, "delta": L * (2 * N + 1)}[transition]
    factors = kept
    if chunk * kept * N * N * item > _FACTOR_BYTES:
        seg = math.isqrt(L - 1) + 1
        factors = -(-L // seg) + seg
    per_channel = a_size + 2 * L * N + (factors + 8) * N * N + kept * K
    # A chunk holds at most the channels there are (on CUDA it is not capped by them).
    return result + in_flight * min(chunk, channels) * per_channel * item


def _unstable_error(a, b, c, kind, dt):
    """The ValueError for non-finite singular values: growing A_t, or huge b and c."""
    if kind == "diagonal":
        growth = float(a.abs().amax())
        found = f"the largest |a| is {growth:.4g}"
    elif kind == "dense":
        growth = float(torch.linalg.matrix_norm(a.to(torch.float64), ord=2).amax())
        found = f"the largest spectral norm ||A_t||_2 is {growth:.4g}"
    else:
        growth, found = a.growth(), a.describe_growth()
    if growth <= 1:
        return ValueError(
            f"The singular values overflow {dt} although `a` is stable ({found}): `b` and "
            f"`c` are too large (max |b| = {float(b.abs().amax()):.3g}, max |c| = "
            f"{float(c.abs().amax()):.3g}). Rescale them (ESS is scale-free)."
        )
    return ValueError(
        f"`a` makes the recurrence unstable: its state grows past the range of {dt} over "
        f"the sequence ({found}; products of many A_t with |A_t| > 1 overflow), so the "
        "singular values cannot be represented. Check the transitions (a stable "
        "recurrence has |A_t| <= 1), use a shorter sequence, or rescale A_t."
    )


def _sqrt_gramian_spectra(*parts, kind, kept, checkpoint):
    """Chunk inputs ``(B or 1, L, ...)``; output ``(B, len(kept), min(N, L//2))``.

    ``kept`` is sorted. The forward sweep runs up to ``max(kept)``, the backward
    one down to ``min(kept)``; the operations per step do not depend on ``kept``.
    """
    *a_parts, b, c = parts
    B, L, N = max(b.shape[0], c.shape[0], *(x.shape[0] for x in a_parts)), *b.shape[1:]
    b = b.expand(B, L, N)
    c = c.expand(B, L, N)
    apply_left, apply_right = _appliers(a_parts, kind)

    def forward(s, i):  # S_(i+1) from S_i: [A_i S_i, b_i] = S_(i+1) Q
        m = torch.cat([apply_left(i, s), b[:, i, :, None]], dim=-1)  # (B, N, N+1)
        return torch.linalg.qr(m.mT, mode="r").R.mT

    # 1. reachability factors, forward: S_0 = 0; keep S_i for i in kept (or every
    #    seg-th one as a checkpoint when they would not fit).
    seg = math.isqrt(L - 1) + 1 if checkpoint else None
    kept_set = set(kept)
    s = b.new_zeros(B, N, N)
    stored = {0: s}
    for i in range(max(kept)):
        s = forward(s, i)
        if (i + 1) in kept_set if seg is None else (i + 1) % seg == 0:
            stored[i + 1] = s
    if not bool(torch.isfinite(s).all()):
        # Overflow never recovers: report it now, not after the backward sweep.
        return b.new_full((B, len(kept), min(N, L // 2)), float("nan"))

    segment = {}  # the recomputed factors of one checkpoint segment

    def factor(i):
        if seg is None:
            return stored[i]
        if i not in segment:
            start = (i // seg) * seg
            segment.clear()
            s = segment[start] = stored[start]
            for j in range(start, min(start + seg - 1, max(kept))):
                s = segment[j + 1] = forward(s, j)
        return segment[i]

    # 2. observability factors, backward: [c_i^T A_i; Z_(i+1) A_i] = Q Z_i; then
    # 3. sigma(H_i) = svdvals(Z_i S_i); entries past min(i, L-i) are zero by structure.
    K = min(N, L // 2)
    position = {i: j for j, i in enumerate(kept)}
    # On the CPU one svdvals per split (the same call whatever is kept, so the same
    # bits); on CUDA one batched call at the end (launch latency dominates there).
    batched = b.device.type == "cuda"
    products = b.new_empty(B, len(kept), N, N) if batched else None
    out = b.new_zeros(B, len(kept), K)
    z = b.new_zeros(B, N, N)
    for i in range(L - 1, min(kept) - 1, -1):
        m = torch.cat([apply_right(i, c[:, i, None, :]), apply_right(i, z)], dim=-2)
        z = torch.linalg.qr(m, mode="r").R
        if i in position:
            if batched:
                products[:, position[i]] = z @ factor(i)
            else:
                out[:, position[i]] = torch.linalg.svdvals(z @ factor(i))[:, :K]
    if batched:
        out = torch.linalg.svdvals(products)[..., :K]
    split = torch.tensor(kept, device=b.device)
    rank_cap = torch.minimum(split, L - split)
    return out.masked_fill(torch.arange(K, device=b.device) >= rank_cap[:, None], 0.0)


def _appliers(a_parts, kind):
    """``(apply_left(i, m) = A_i @ m, apply_right(i, m) = m @ A_i)`` for a chunk."""
    if kind == "diagonal":
        (a,) = a_parts
        return (lambda i, m: a[:, i, :, None] * m), (lambda i, m: m * a[:, i, None, :])
    if kind == "dense":
        (a,) = a_parts
        return (lambda i, m: a[:, i] @ m), (lambda i, m: m @ a[:, i])
    from .delta import delta_appliers

    return delta_appliers(*a_parts)


def recurrence_operator(a, b, c, *, transition=None, dtype=None, device=None) -> torch.Tensor:
    """The dense causal operator ``T`` of a recurrence, by running it on impulses.

    Reference for ``recurrence_spectra`` and the dense view of recurrent mixers:
    ``T[t, j] = c_t^T A_t ... A_(j+1) b_j`` for ``j <= t``, zero above the diagonal.

    Parameters
    ----------
    a, b, c, transition : as in ``recurrence_spectra`` (``a`` may be a
        ``DeltaTransition``).
    dtype : torch.dtype, optional
        Working precision; float64 by default.
    device : str or torch.device, optional
        Where to compute; by default the device of ``b``.

    Returns
    -------
    torch.Tensor, shape (..., L, L)
    """
    a, b, c, kind, batch = _check_recurrence(a, b, c, transition)
    dev = b.device if device is None else resolve_device(device)
    L, N = b.shape[-2:]
    channels = math.prod(batch)
    dt = resolve_dtype(dtype)
    check_dense_size(batch, L, dt, "recurrence_operator")
    if channels == 0:
        return torch.zeros(*batch, L, L, dtype=dt, device=dev)
    chunks = _Chunks(batch, [*_transition_parts(a, kind), (b, 2), (c, 2)], dev, dt)
    *a_parts, b, c = chunks.take(0, channels)
    B = max(b.shape[0], c.shape[0], *(x.shape[0] for x in a_parts))
    b, c = b.expand(B, L, N), c.expand(B, L, N)
    apply_left, _ = _appliers(a_parts, kind)
    T = b.new_zeros(B, L, L)
    x = b.new_zeros(B, N, L)  # column j: the state an impulse at time j has left
    for t in range(L):
        x = apply_left(t, x).expand(B, N, L).clone()
        x[:, :, t] = b[:, t]
        T[:, t] = (c[:, t, None, :] @ x).squeeze(-2)
    return T.reshape(*batch, L, L)
