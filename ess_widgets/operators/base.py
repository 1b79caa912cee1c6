"""``CausalOperator``: one mixer's input-to-output map as a batch of causal matrices.

Every mixer family builds one of these. It holds what ESS needs:

- ``dense()``: the operators ``T``, shape ``(..., L, L)`` (built on demand: for an
  SSM layer with thousands of channels the dense form is large);
- ``recurrence``: ``(a, b, c)`` of ``x_t = A_t x_(t-1) + b_t u_t, y_t = c_t . x_t``
  when the mixer has a finite state, else ``None``;
- ``tss``: the theoretical state size per split, shape broadcastable to ``(..., L-1)``;
- ``spectra()``: singular values per split, through the recurrence when there is
  one (O(L N^3), no L x L matrix), else through the dense path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..core import (
    entropy_ess,
    ess_bound,
    recurrence_operator,
    recurrence_spectra,
    spectra,
    tolerance_ess,
)
from ..core._validation import check_dense_size

__all__ = ["CausalOperator"]


@dataclass(frozen=True, eq=False)
class CausalOperator:
    """A batch of causal linear operators ``y = T u``, one per channel or head.

    Parameters
    ----------
    kind : str
        The mixer family, e.g. ``"softmax_attention"``, ``"linear_attention"``,
        ``"selective_ssm"``.
    length : int
        Sequence length ``L``.
    tss : torch.Tensor, shape broadcastable to (..., L-1)
        Theoretical state size per split (int64).
    recurrence : tuple of torch.Tensor, optional
        ``(a, b, c)`` as accepted by ``recurrence_spectra``.
    dense_fn : callable, optional
        Returns the dense operators ``(..., L, L)``. Defaults to materializing the
        recurrence.
    transition : {None, "diagonal", "dense"}, optional
        How ``recurrence_spectra`` reads the recurrence's ``a`` (None: from the
        shapes, which is ambiguous when L equals the state size).
    batch_shape : tuple of int, optional
        The leading dimensions of ``dense()``, for the memory check before it is
        built. Read from the recurrence's ``b`` and ``c`` when omitted; without
        either, ``dense()`` is not checked (e.g. maps that already exist).
    dtype : torch.dtype, optional
        The dtype of ``dense()``; read from the recurrence when omitted.
    """

    kind: str
    length: int
    tss: torch.Tensor
    recurrence: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    dense_fn: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    transition: str | None = None
    batch_shape: tuple[int, ...] | None = None
    dtype: torch.dtype | None = None

    def __post_init__(self):
        if self.dense_fn is None and self.recurrence is None:
            raise ValueError("A CausalOperator needs `dense_fn` or `recurrence`.")

    def _dense_layout(self) -> tuple[tuple[int, ...], torch.dtype] | None:
        """``(batch_shape, dtype)`` of ``dense()``, or None when unknown."""
        batch, dtype = self.batch_shape, self.dtype
        if self.recurrence is not None:
            _, b, c = self.recurrence
            if batch is None:
                batch = tuple(torch.broadcast_shapes(b.shape[:-2], c.shape[:-2]))
            if dtype is None:
                dtype = torch.promote_types(b.dtype, c.dtype)
        if batch is None or dtype is None:
            return None
        return tuple(batch), dtype

    def dense(self) -> torch.Tensor:
        """The operators ``T``, shape ``(..., L, L)``, zero above the diagonal.

        Raises
        ------
        ValueError
            Before allocating, when ``T`` would need more bytes than the machine's
            physical memory (use ``spectra()``: no ``L x L`` matrix when there is
            a recurrence).
        """
        layout = self._dense_layout()
        if layout is not None:
            batch, dtype = layout
            check_dense_size(batch, self.length, dtype, f"{self.kind}.dense()")
        if self.dense_fn is not None:
            return self.dense_fn()
        return recurrence_operator(*self.recurrence, transition=self.transition)

    def spectra(self, **kwargs) -> torch.Tensor:
        """Singular values of every split, shape ``(..., L-1, K)``.

        Uses ``recurrence_spectra`` (K = min(N, L // 2)) when the mixer has a
        recurrence, else ``spectra`` of ``dense()`` (K = L // 2). Keyword arguments
        (``dtype``, ``device``) are passed on.
        """
        if self.recurrence is not None:
            return recurrence_spectra(*self.recurrence, transition=self.transition, **kwargs)
        return spectra(self.dense(), **kwargs)

    def tolerance_ess(self, tol, *, relative=False) -> torch.Tensor:
        """Tolerance-ESS per split, shape ``(..., L-1)``."""
        return tolerance_ess(self.spectra(), tol, relative=relative)

    def entropy_ess(self) -> torch.Tensor:
        """Entropy-ESS per split, shape ``(..., L-1)``."""
        return entropy_ess(self.spectra())

    @property
    def bound(self) -> torch.Tensor:
        """``min(i, L - i)`` per split, shape ``(L-1,)``."""
        return ess_bound(self.length)
