"""Delta-rule transitions ``A_t = (I - beta_t k_t k_t^T) diag(decay_t)``, never formed.

Gated DeltaNet (Qwen3-Next, OLMo hybrids) has a scalar decay per step,
``A_t = alpha_t (I - beta_t k_t k_t^T)``; Kimi Delta Attention has one decay per
key channel, ``A_t = (I - beta_t k_t k_t^T) diag(alpha_t)``. With N = d_k = 128 the
whole sequence of N x N matrices is 128 KiB per step and channel (64 MiB per head
at L = 512). ``recurrence_spectra`` applies each ``A_t`` in its diagonal-plus-rank-one
form instead, in O(N^2) per step and column block::

    A S   = D S - beta k (k^T D S)            (D = diag(decay_t))
    M A   = (M - beta (M k) k^T) D
"""

from __future__ import annotations

import torch

from ._validation import as_tensor, check_finite

__all__ = ["DeltaTransition"]


class DeltaTransition:
    """The transitions ``A_t = (I - beta_t k_t k_t^T) diag(decay_t)`` of a delta rule.

    Pass it as ``a`` to ``recurrence_spectra`` or ``recurrence_operator``; the
    ``(L, N, N)`` matrices are never formed there.

    Parameters
    ----------
    decay : torch.Tensor or numpy.ndarray, shape (..., L) or (..., L, N)
        ``(..., L)``: one decay per step (Gated DeltaNet's ``alpha_t``), when it has
        one dimension less than ``k``. ``(..., L, N)``: one per key channel (Kimi
        Delta Attention), when it has as many dimensions as ``k``.
    beta : torch.Tensor or numpy.ndarray, shape (..., L)
        The write strength ``beta_t`` (in [0, 1] or [0, 2] in the models); one
        dimension less than ``k``.
    k : torch.Tensor or numpy.ndarray, shape (..., L, N)
        The keys ``k_t`` (L2-normalised in the models; any vectors are accepted).

    Leading dimensions broadcast with each other and with those of ``b`` and ``c``
    in ``recurrence_spectra``: one ``DeltaTransition`` of a key head with ``k`` of
    shape ``(L, N)`` serves ``b``, ``c`` of shape ``(C, L, N)`` for its C value
    channels without copies.

    Attributes
    ----------
    L, N : int
        Sequence length and state size.
    per_channel : bool
        Whether ``decay`` has one value per key channel.
    batch_shape : tuple of int
        The broadcast leading dimensions of ``decay``, ``beta`` and ``k``.

    Examples
    --------
    >>> import torch
    >>> from ess_widgets import DeltaTransition, recurrence_spectra, recurrence_operator
    >>> L, N = 6, 3
    >>> g = torch.Generator().manual_seed(0)
    >>> k = torch.nn.functional.normalize(torch.randn(L, N, generator=g), dim=-1)
    >>> A = DeltaTransition(torch.full((L,), 0.9), torch.full((L,), 0.5), k)
    >>> A.dense().shape
    torch.Size([6, 3, 3])
    >>> b = c = torch.randn(L, N, generator=g)
    >>> s = recurrence_spectra(A, b, c)
    >>> torch.allclose(s, recurrence_spectra(A.dense(), b, c, transition="dense"))
    True
    """

    def __init__(self, decay, beta, k):
        decay, beta, k = (as_tensor(x, n) for x, n in ((decay, "decay"), (beta, "beta"), (k, "k")))
        for x, n in ((decay, "decay"), (beta, "beta"), (k, "k")):
            check_finite(x, n)
        if k.ndim < 2:
            raise ValueError(
                f"`k` must have shape (..., L, N), one key per step, got shape {tuple(k.shape)}."
            )
        L, N = k.shape[-2:]
        if beta.ndim != k.ndim - 1 or beta.shape[-1] != L:
            raise ValueError(
                f"`beta` must have shape (..., L) = (..., {L}) with one dimension less than "
                f"`k` {tuple(k.shape)}, got shape {tuple(beta.shape)}."
            )
        if decay.ndim == k.ndim - 1 and decay.shape[-1] == L:
            per_channel = False
        elif decay.ndim == k.ndim and tuple(decay.shape[-2:]) == (L, N):
            per_channel = True
        else:
            raise ValueError(
                f"`decay` must have shape (..., L) = (..., {L}) (one decay per step, one "
                f"dimension less than `k`) or (..., L, N) = (..., {L}, {N}) (one per key "
                f"channel, as many dimensions as `k` {tuple(k.shape)}), got shape "
                f"{tuple(decay.shape)}."
            )
        leads = (decay.shape[: decay.ndim - 1 - per_channel], beta.shape[:-1], k.shape[:-2])
        try:
            batch = tuple(torch.broadcast_shapes(*leads))
        except RuntimeError:
            raise ValueError(
                "The leading dimensions of `decay`, `beta`, `k` do not broadcast: "
                + ", ".join(str(tuple(x)) for x in leads)
                + "."
            ) from None
        self.decay, self.beta, self.k = decay, beta, k
        self.L, self.N = int(L), int(N)
        self.per_channel = per_channel
        self.batch_shape = batch

    def __repr__(self) -> str:
        form = "per key channel" if self.per_channel else "scalar per step"
        return (
            f"DeltaTransition(L={self.L}, N={self.N}, batch_shape={self.batch_shape}, decay {form})"
        )

    def dense(self) -> torch.Tensor:
        """All ``A_t`` as matrices, shape ``(..., L, N, N)`` (for references and tests).

        ``A_t[p, q] = decay_t[q] (delta_pq - beta_t k_t[p] k_t[q])``.
        """
        d = self.decay if self.per_channel else self.decay[..., None]
        eye = torch.eye(self.N, dtype=self.k.dtype, device=self.k.device)
        kk = self.k[..., :, None] * self.k[..., None, :]
        return (eye - self.beta[..., None, None] * kk) * d[..., None, :]

    def _reflection(self) -> float:
        # I - beta k k^T has the eigenvalue 1 - beta |k|^2 along k_t and 1 across it.
        return float((1 - self.beta * (self.k * self.k).sum(-1)).abs().amax())

    def growth(self) -> float:
        """An upper bound on every ``||A_t||_2``: max |decay| * max(1, |1 - beta |k|^2|)."""
        return float(self.decay.abs().amax()) * max(1.0, self._reflection())

    def describe_growth(self) -> str:
        """Where ``|A_t|`` exceeds 1, in words (for the instability error)."""
        return (
            f"the largest |decay| is {float(self.decay.abs().amax()):.4g} and the "
            f"largest |1 - beta |k|^2| is {self._reflection():.4g}"
        )


def delta_appliers(decay, beta, k):
    """``A_i @ m`` and ``m @ A_i`` for a chunk: decay ``(B, L)`` or ``(B, L, N)``,
    beta ``(B, L)``, k ``(B, L, N)`` (B may be 1 for shared parts), without ``A_i``.
    """
    per_channel = decay.ndim == 3

    def d_of(i):  # (B, N) or (B, 1)
        return decay[:, i] if per_channel else decay[:, i, None]

    def apply_left(i, m):  # (I - beta k k^T) D m, m (B, N, M)
        dm = d_of(i)[:, :, None] * m
        ki = k[:, i, :, None]  # (B, N, 1)
        return dm - (beta[:, i, None, None] * ki) * (ki.mT @ dm)

    def apply_right(i, m):  # m (I - beta k k^T) D, m (B, R, N)
        ki = k[:, i, :, None]
        return (m - (m @ ki) * (beta[:, i, None, None] * ki.mT)) * d_of(i)[:, None, :]

    return apply_left, apply_right
