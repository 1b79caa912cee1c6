"""``LayerOperators``: one mixer's operators on one input, with its tokens.

It wraps the mixer's ``CausalOperator`` (``C`` operators: heads or channels) and
adds what a reader needs next to the numbers: the token strings, the layer, the
mixer's name and operator family, and a memory guard on the dense form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..core import entropy_ess, ess_bound, normalize_splits, tolerance_ess
from ..core._validation import check_flag
from ..operators.base import CausalOperator
from .memory import require

__all__ = ["LayerOperators"]


def _channel_index(channels, C: int) -> torch.Tensor:
    """``channels`` (None, int, slice, sequence, tensor) as int64 indices into ``C``."""
    every = torch.arange(C)
    if channels is None:
        return every
    if isinstance(channels, int) and not isinstance(channels, bool):
        if not -C <= channels < C:
            raise IndexError(f"`channels` = {channels} is out of range for {C} channels.")
        return every[[channels]]
    if (
        hasattr(channels, "__len__")
        and not isinstance(channels, (slice, torch.Tensor))
        and not len(channels)
    ):
        raise ValueError(f"`channels` = {channels!r} selects none of the {C} channels.")
    try:
        index = every[channels if isinstance(channels, slice) else torch.as_tensor(channels)]
    except (IndexError, TypeError, ValueError, RuntimeError) as err:
        raise IndexError(
            f"`channels` must be None, an int, a slice or a sequence of ints below {C}, "
            f"got {channels!r} ({err})."
        ) from None
    if index.numel() == 0:
        raise ValueError(f"`channels` = {channels!r} selects none of the {C} channels.")
    return index


def _channel_key(channels):
    if channels is None or isinstance(channels, (int, slice)):
        return repr(channels)
    return tuple(torch.as_tensor(channels).reshape(-1).tolist())


@dataclass(frozen=True, eq=False)
class LayerOperators:
    """The causal operators of one mixer of one layer on one input.

    Attributes
    ----------
    layer : int
        Layer (block) index, 0-based.
    mixer : str
        The mixer's name in its block: ``"attention"``, ``"ssm"``,
        ``"linear_attention"``, ...
    kind : str
        The operator family, as ``operator.kind``: ``"softmax_attention"``,
        ``"selective_ssm"``, ``"ssd"``, ...
    channel_label : str
        What users call one operator (channel): ``"head"`` (attention, SSD) or
        ``"channel"`` (selective SSM).
    tokens : tuple of str
        The readable token strings; split ``i`` comes right after ``tokens[i - 1]``.
    token_ids : torch.Tensor of int64, shape (L,)
    num_channels : int
        ``C``.
    memory_budget : int
        Bytes ``dense()`` may allocate.
    record : dict
        What was captured from the model (attention maps, or dt, A, B, C, the SSM
        input ``u`` and friends), for checks against the model's own outputs.
    splits : list of int or None
        The splits ``spectra()`` computes by default (None: all ``1 .. L-1``).
    """

    layer: int
    mixer: str
    kind: str
    channel_label: str
    tokens: tuple[str, ...]
    token_ids: torch.Tensor
    num_channels: int
    memory_budget: int
    record: dict = field(repr=False)
    build: Callable[[torch.Tensor | None], CausalOperator] = field(repr=False)
    dense_bytes: Callable[[int, int], int] | None = field(repr=False, default=None)
    splits: list[int] | None = None
    _cache: dict = field(repr=False, default_factory=dict)

    @property
    def length(self) -> int:
        """Sequence length ``L``."""
        return len(self.tokens)

    @property
    def operator(self) -> CausalOperator:
        """All ``C`` operators as one ``CausalOperator``; its ``kind`` names the operator
        family (``"softmax_attention"``, ``"selective_ssm"``, ``"ssd"``)."""
        if "operator" not in self._cache:
            self._cache["operator"] = self.build(None)
        return self._cache["operator"]

    def _selected(self, channels) -> tuple[CausalOperator, int]:
        if channels is None:
            return self.operator, self.num_channels
        index = _channel_index(channels, self.num_channels)
        return self.build(index), index.numel()

    def dense(self, channels=None) -> torch.Tensor:
        """The operators ``T``, zero above the diagonal.

        Parameters
        ----------
        channels : int, slice or sequence of int, optional
            Which heads or channels (all by default).

        Returns
        -------
        torch.Tensor, shape (C, L, L)
            Rows are outputs, columns inputs. Attention: the model's own attention
            probabilities, in their precision (float32 for a float32 model). SSMs:
            built from dt, A, B, C in float64.

        Raises
        ------
        ValueError
            When the dense form would exceed ``memory_budget``; the message says how
            many tokens or channels fit.
        """
        op, n = self._selected(channels)
        if self.dense_bytes is not None:
            L = self.length
            require(
                f"dense() of layer {self.layer} ({n} {self.channel_label}s)",
                lambda length: self.dense_bytes(n, length),
                L,
                self.memory_budget,
                remedy=(
                    "select fewer with dense(channels=...), use spectra() (no L x L "
                    "matrix for SSMs), "
                ),
            )
        return op.dense()

    def spectra(self, channels=None, *, splits=None, **kwargs) -> torch.Tensor:
        """Singular values of the split blocks ``T[c, i:, :i]``.

        Through ``recurrence_spectra`` for SSM layers (no ``L x L`` matrix), through
        the dense path for attention.

        Parameters
        ----------
        channels : int, slice or sequence of int, optional
            Which heads or channels (all by default).
        splits : optional
            Which splits: ints in ``1 .. L-1`` (in the order given), a range, or an int
            stride ``k``; by default ``self.splits`` (all when None).
        **kwargs
            ``dtype``, ``device`` (and ``method`` for attention), passed to the core.

        Returns
        -------
        torch.Tensor, shape (C, S, K)
            Row ``j`` holds the singular values at split ``splits[j]`` (all splits:
            row ``i - 1`` is split ``i``), descending, zero padded; ``K = L // 2`` for
            attention, ``min(d_state, L // 2)`` for SSMs.
        """
        chosen = self.splits if splits is None else normalize_splits(splits, self.length)
        every = chosen is None or chosen == list(range(1, self.length))
        key = (
            "spectra",
            _channel_key(channels),
            None if every else tuple(chosen),
            tuple(sorted(kwargs.items(), key=str)),
        )
        if key not in self._cache:
            op, _ = self._selected(channels)
            if every:
                self._cache[key] = op.spectra(**kwargs)
            else:
                self._cache[key] = op.spectra(splits=chosen, **kwargs)
        return self._cache[key]

    @property
    def tss(self) -> torch.Tensor:
        """Theoretical state size per operator and split, int64 ``(C, L-1)``."""
        tss = self.operator.tss
        return tss.expand(self.num_channels, self.length - 1) if tss.ndim < 2 else tss

    @property
    def bound(self) -> torch.Tensor:
        """``min(i, L - i)`` per split, int64 ``(L-1,)``."""
        return ess_bound(self.length)

    def tolerance_ess(
        self, tol: float, *, relative: bool = False, channels=None, splits=None
    ) -> torch.Tensor:
        """Tolerance-ESS per operator and split, int64 ``(C, S)``."""
        relative = check_flag(relative, "relative")
        return tolerance_ess(self.spectra(channels, splits=splits), tol, relative=relative)

    def entropy_ess(self, channels=None, *, splits=None) -> torch.Tensor:
        """Entropy-ESS per operator and split, ``(C, S)``."""
        return entropy_ess(self.spectra(channels, splits=splits))

    def __repr__(self) -> str:
        return (
            f"LayerOperators(layer={self.layer}, mixer={self.mixer!r}, kind={self.kind!r}, "
            f"{self.num_channels} {self.channel_label}s, L={self.length})"
        )
