"""``OperatorHandle``: the one interface of every model handle.

A handle sees a model as decoder blocks (layers ``0 .. num_layers - 1``), each
holding zero (MLP-only), one or several sequence mixers (``mixers(layer)``,
named ``"attention"``, ``"ssm"``, ...), each mixer ``C`` causal operators
(channels: heads or inner channels). The base class owns everything that does
not depend on the model: ``encode``, layer and mixer indexing, the memory and
time checks, ``operators``, ``layer_operators``, ``ess_table``, ``estimate``.

A subclass gives

- ``_blocks``: per block, a tuple of ``MixerSpec`` (set in ``__init__``);
- ``_capture(ids, specs)``: the one model-specific hook, from token ids ``(L,)``
  to ``{(layer, mixer): Capture}`` for the requested mixers, in one forward pass;
- optionally ``_text_ids(text)`` and ``_token_strings(ids)`` for a text format
  other than the tokenizer's (MQAR), and ``vocab_size``.

``ModelHandle`` (transformers models) and ``MQARHandle`` (the shipped MQAR models)
are the two subclasses.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core import DEFAULT_TOL, normalize_splits
from ..core._validation import check_flag
from ..operators.base import CausalOperator
from . import estimate as _estimate
from .base import Footprint
from .layer_operators import LayerOperators
from .memory import check_budget, require
from .table import join_layers, layer_frame, token_dtype
from .tokens import Encoded, encode, token_strings

__all__ = [
    "OperatorHandle",
    "MixerSpec",
    "Capture",
    "DEFAULT_TOL",
    "DEFAULT_TEXT",
    "DEFAULT_MAX_SECONDS",
]

DEFAULT_TEXT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, which was built "
    "in 1889.\nWhere is the Eiffel Tower? It stands in Paris, next to the river Seine."
)
DEFAULT_MAX_SECONDS = 30 * 60.0
# One recording forward pass at a time: hooks and patched scan functions are shared
# state (a background thread of the explorer may record while another call does).
_CAPTURE_LOCK = threading.RLock()
_DEFAULT = object()


@dataclass(frozen=True, eq=False)
class MixerSpec:
    """What a handle knows about one mixer before running the model.

    Attributes
    ----------
    layer : int
        Block index.
    mixer : str
        Name in the block (``"attention"``, ``"ssm"``, ``"linear_attention"``, ...).
    kind : str
        Operator family (``"softmax_attention"``, ``"ssd"``, ...).
    channel_label : str
        What users call one channel: ``"head"`` or ``"channel"``.
    num_channels : int
        ``C``, operators of the mixer.
    state_size : int or None
        ``N`` of the recurrence the spectra run through; None for the dense path.
    footprint : callable
        ``footprint(L) -> Footprint``: bytes at sequence length ``L``.
    transition : str
        The recurrence's ``A``: ``"diagonal"``, ``"dense"`` or ``"delta"``.
    """

    layer: int
    mixer: str
    kind: str
    channel_label: str
    num_channels: int
    state_size: int | None
    footprint: Callable[[int], Footprint]
    transition: str = "diagonal"

    @property
    def key(self) -> tuple[int, str]:
        return (self.layer, self.mixer)


@dataclass(frozen=True, eq=False)
class Capture:
    """One mixer's record from a forward pass and how to build its operators.

    ``build(index)`` gives the ``CausalOperator`` of the channels ``index`` (an int64
    tensor; None: all).
    """

    record: dict
    build: Callable[[torch.Tensor | None], CausalOperator]


def _check_max_seconds(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`max_seconds` must be a number of seconds or None (no limit), got {value!r}."
        )
    if not value > 0:
        raise ValueError(f"`max_seconds` must be > 0 (or None for no limit), got {value!r}.")
    return float(value)


class OperatorHandle:
    """A model seen as blocks of sequence mixers, each a set of causal operators.

    Attributes
    ----------
    name : str
        Shown in reprs and table metadata.
    family : str
        The model family shown to users (``"Llama"``, ``"Falcon-H1"``, ``"MQAR"``).
    tokenizer : tokenizer or None
        None when text input has its own format (MQAR) or the model came without one.
    context_length : int or None
        The longest input the model accepts; None without a position limit.
    memory_budget : int
        Bytes one call may allocate.
    default_text : str
        A text the handle reads, for a first look (the explorer shows it).
    """

    name: str = ""
    family: str = ""
    tokenizer = None
    context_length: int | None = None
    memory_budget: int = 0
    default_text: str = DEFAULT_TEXT
    _blocks: ClassVar[list[tuple[MixerSpec, ...]]] = []

    # ----------------------------------------------------- model-specific hooks
    def _capture(self, ids: torch.Tensor, specs: list[MixerSpec]) -> dict:
        """Run the model once on ``ids`` ``(L,)``; ``{spec.key: Capture}`` of ``specs``."""
        raise NotImplementedError

    def _captured(self, ids: torch.Tensor, specs: list[MixerSpec]) -> dict:
        with _CAPTURE_LOCK:
            return self._capture(ids, specs)

    def _text_ids(self, text: str):
        """Token ids of a text (the tokenizer's by default)."""
        return text  # ``encode`` tokenizes with ``self.tokenizer``

    def _token_strings(self, ids: torch.Tensor) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Readable and raw token strings of ``ids``."""
        return token_strings(ids.tolist(), self.tokenizer)

    @property
    def vocab_size(self) -> int | None:
        """Token ids must be below this (None: no check)."""
        return None

    # -------------------------------------------------------------------- facts
    @property
    def num_layers(self) -> int:
        """Number of blocks (MLP-only blocks included)."""
        return len(self._blocks)

    @property
    def layer_kinds(self) -> list[str]:
        """Per block, its mixer names joined by ``"+"`` in forward order
        (``"attention"``, ``"ssm"``, ``"attention+ssm"``), ``"mlp"`` for MLP-only."""
        return ["+".join(s.mixer for s in specs) or "mlp" for specs in self._blocks]

    @property
    def mlp_only_layers(self) -> list[int]:
        """Blocks without a sequence mixer: absent from ESS tables."""
        return [i for i, specs in enumerate(self._blocks) if not specs]

    @property
    def mixer_layers(self) -> list[int]:
        """Blocks with at least one sequence mixer."""
        return [i for i, specs in enumerate(self._blocks) if specs]

    def mixers(self, layer: int) -> list[str]:
        """Names of the sequence mixers of a block, in the order the forward pass runs
        them (empty for an MLP-only block)."""
        return [s.mixer for s in self._blocks[self._layer_index(layer)]]

    def num_channels(self, layer: int, mixer: str | None = None) -> int:
        """Operators (heads or channels) ``C`` of a mixer."""
        return self.spec(layer, mixer).num_channels

    def channel_label(self, layer: int, mixer: str | None = None) -> str:
        """What users call one channel of a mixer: ``"head"`` or ``"channel"``."""
        return self.spec(layer, mixer).channel_label

    def spec(self, layer: int, mixer: str | None = None) -> MixerSpec:
        """The ``MixerSpec`` of one mixer.

        Raises
        ------
        ValueError
            An MLP-only block; ``mixer=None`` on a block with several mixers, or an
            unknown mixer name (the message lists the block's mixers).
        """
        index = self._layer_index(layer)
        specs = self._blocks[index]
        names = [s.mixer for s in specs]
        if not specs:
            raise ValueError(
                f"Layer {index} has no sequence mixer (an MLP-only block): choose one of "
                f"the layers {self.mixer_layers}."
            )
        if mixer is None:
            if len(specs) > 1:
                raise ValueError(
                    f"Layer {index} has {len(specs)} mixers {names}: pass mixer= one of them."
                )
            return specs[0]
        if not isinstance(mixer, str):
            raise TypeError(f"`mixer` must be a str (one of {names}), got {type(mixer).__name__}.")
        for s in specs:
            if s.mixer == mixer:
                return s
        raise ValueError(f"Layer {index} has no mixer {mixer!r}: its mixers are {names}.")

    def specs(self, layers=None) -> list[MixerSpec]:
        """Every mixer of the given layers (all by default), in forward order."""
        return [s for i in self._layer_list(layers) for s in self._blocks[i]]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:
        kinds = sorted({s.mixer for specs in self._blocks for s in specs})
        mlp = f", {len(self.mlp_only_layers)} MLP-only" if self.mlp_only_layers else ""
        return (
            f"{type(self).__name__}({self.name!r}, {self.family}, {self.num_layers} layers "
            f"({', '.join(kinds)}{mlp}), tokenizer={'yes' if self.tokenizer else 'no'})"
        )

    # ------------------------------------------------------------------- inputs
    def encode(self, inputs) -> Encoded:
        """Token ids and token strings of a text or of token ids.

        Parameters
        ----------
        inputs : str or sequence of int or numpy.ndarray or torch.Tensor (L,) or (1, L)

        Returns
        -------
        Encoded
            ``ids`` (L,), ``tokens`` (readable) and ``raw_tokens``.

        Raises
        ------
        TypeError
            Bytes, floats or other non-text, non-integer inputs.
        ValueError
            Empty text, text without a tokenizer, fewer than 2 tokens, ids outside
            the vocabulary, or more tokens than the model's context length.
        """
        if isinstance(inputs, str):
            inputs = self._text_ids(inputs)
        enc = encode(inputs, self.tokenizer, add_special_tokens=self._add_special_tokens)
        vocab = self.vocab_size
        if vocab and int(enc.ids.max()) >= vocab:
            raise ValueError(
                f"Token id {int(enc.ids.max())} is outside the vocabulary of {vocab} "
                "tokens of this model."
            )
        limit = self.context_length
        if limit is not None and len(enc) > limit:
            raise ValueError(
                f"The input has {len(enc)} tokens, more than the {limit} positions "
                f"{self.name} accepts (its context length, max_position_embeddings). "
                f"Shorten it to at most {limit} tokens."
            )
        if self.tokenizer is None:  # token strings from the handle's own format
            tokens, raw = self._token_strings(enc.ids)
            enc = Encoded(enc.ids, tokens, raw)
        return enc

    _add_special_tokens = True

    # ---------------------------------------------------------------- indexing
    def _layer_index(self, layer) -> int:
        if isinstance(layer, bool):
            raise TypeError("A layer must be an int, got bool.")
        try:
            index = operator.index(layer)
        except TypeError:
            raise TypeError(f"A layer must be an int, got {type(layer).__name__}.") from None
        n = self.num_layers
        if not -n <= index < n:
            raise IndexError(
                f"Layer {index} is out of range: the model has {n} layers (0..{n - 1})."
            )
        return index % n

    def _layer_list(self, layers) -> list[int]:
        """Sorted distinct layer indices; None: every layer with a mixer."""
        if layers is None:
            return self.mixer_layers
        if isinstance(layers, Iterable) and not isinstance(layers, (str, bytes)):
            out = [self._layer_index(layer) for layer in layers]
            if not out:
                raise ValueError("`layers` is empty: pass None for all layers.")
            return sorted(set(out))
        return [self._layer_index(layers)]

    def _budget(self, memory_budget) -> int:
        return self.memory_budget if memory_budget is None else check_budget(memory_budget)

    # ------------------------------------------------------------ memory, time
    def _check_memory(self, specs: list[MixerSpec], L: int, budget: int) -> None:
        for spec in specs:
            require(
                f"Layer {spec.layer} {spec.mixer} ({spec.num_channels} "
                f"{spec.channel_label}s, {spec.kind})",
                lambda length, spec=spec: spec.footprint(length).peak,
                L,
                budget,
            )

    def _batches(self, specs: list[MixerSpec], L: int, budget: int) -> list[list[MixerSpec]]:
        """Group mixers so that one forward pass records a group within the budget."""
        batches: list[list[MixerSpec]] = []
        held, extra = 0, 0
        for spec in specs:
            fp = spec.footprint(L)
            if batches and held + fp.capture + max(extra, fp.peak - fp.capture) <= budget:
                batches[-1].append(spec)
                held += fp.capture
                extra = max(extra, fp.peak - fp.capture)
            else:
                batches.append([spec])
                held, extra = fp.capture, fp.peak - fp.capture
        return batches

    def estimate(self, inputs, layers=None, splits=None, *, memory_budget=None) -> dict:
        """Time and memory an ``ess_table`` of these layers would take; never runs the model.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor, or int
            The input (it is tokenized), or its length ``L`` in tokens.
        layers : int or iterable of int, optional
            All layers with a mixer by default.
        splits : optional
            As in ``ess_table``: all ``1 .. L-1`` by default.
        memory_budget : int, optional
            Groups layers into forward passes as ``ess_table`` would.

        Returns
        -------
        dict
            ``seconds`` (float, spectra on this machine's CPU, from a calibration
            cached per process), ``bytes`` (the most held at once), ``L``,
            ``splits`` (how many), ``passes`` (forward passes), ``per_layer``
            (``{(layer, mixer): seconds}``).
        """
        if isinstance(inputs, int) and not isinstance(inputs, bool):
            L = int(inputs)
            if L < 2:
                raise ValueError(f"A length must be >= 2 tokens, got {L}.")
        else:
            L = len(self.encode(inputs))
        specs = self.specs(layers)
        return self._estimate(specs, L, splits, self._budget(memory_budget))

    def _estimate(self, specs, L, splits, budget) -> dict:
        split_list = normalize_splits(splits, L)
        per = {
            s.key: _estimate.seconds(L, split_list, s.num_channels, s.state_size, s.transition)
            for s in specs
        }
        batches = self._batches(specs, L, budget) if specs else []
        held = 0
        for batch in batches:
            fps = [s.footprint(L) for s in batch]
            held = max(held, sum(f.capture for f in fps) + max(f.peak - f.capture for f in fps))
        return {
            "seconds": float(sum(per.values())),
            "bytes": int(held),
            "L": L,
            "splits": len(split_list),
            "passes": len(batches),
            "per_layer": per,
        }

    def _check_time(self, est: dict, max_seconds, what: str) -> None:
        _estimate.check_time(est, max_seconds, what)

    # ------------------------------------------------------------------ public
    def _layer_ops(self, enc, spec, capture, budget, splits) -> LayerOperators:
        C = spec.num_channels
        return LayerOperators(
            layer=spec.layer,
            mixer=spec.mixer,
            kind=spec.kind,
            channel_label=spec.channel_label,
            tokens=enc.tokens,
            token_ids=enc.ids,
            num_channels=C,
            memory_budget=budget,
            record=capture.record,
            build=capture.build,
            dense_bytes=lambda n, length: spec.footprint(length).dense * n // C,
            splits=splits,
        )

    def operators(
        self,
        inputs,
        layer: int,
        *,
        mixer: str | None = None,
        splits=None,
        memory_budget: int | None = None,
        max_seconds=DEFAULT_MAX_SECONDS,
    ) -> LayerOperators:
        """The causal operators of one mixer of one layer on one input.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor of shape (L,) or (1, L)
            A text (the tokenizer's, or the handle's own format) or token ids.
        layer : int
            Layer (block) index; negative counts from the end.
        mixer : str, optional
            Which mixer of the block (``mixers(layer)``); needed only when it has
            several.
        splits : optional
            The splits ``spectra()`` computes by default: ints in ``1 .. L-1``, a
            range, or an int stride ``k`` (every k-th, always with ``L - 1``); all by
            default.
        memory_budget : int, optional
            Bytes allowed (the handle's budget by default).
        max_seconds : float or None, default 1800
            Refuse when the estimated time of ``spectra()`` exceeds it (None: no limit).

        Returns
        -------
        LayerOperators
            ``mixer``, ``kind``, ``tokens``, ``dense()`` ``(C, L, L)``, ``spectra()``
            ``(C, len(splits), K)``, ``tss`` ``(C, L-1)``.

        Raises
        ------
        ValueError
            Bad input (see ``encode``), an MLP-only layer, a missing or unknown
            ``mixer``, an input too long for the budget or over ``max_seconds``.
        """
        budget = self._budget(memory_budget)
        max_seconds = _check_max_seconds(max_seconds)
        spec = self.spec(layer, mixer)
        enc = self.encode(inputs)
        L = len(enc)
        split_list = normalize_splits(splits, L)
        self._check_memory([spec], L, budget)
        self._check_time(
            self._estimate([spec], L, split_list, budget),
            max_seconds,
            f"operators(layer={spec.layer}).spectra()",
        )
        capture = self._captured(enc.ids, [spec])[spec.key]
        return self._layer_ops(enc, spec, capture, budget, None if splits is None else split_list)

    def layer_operators(
        self, inputs, layers=None, *, memory_budget: int | None = None
    ) -> dict[tuple[int, str], LayerOperators]:
        """The operators of every mixer of the given layers, in as few forward passes
        as the memory budget allows.

        Returns
        -------
        dict
            ``{(layer, mixer): LayerOperators}`` in forward order.
        """
        budget = self._budget(memory_budget)
        specs = self.specs(layers)
        enc = self.encode(inputs)
        L = len(enc)
        self._check_memory(specs, L, budget)
        out = {}
        for batch in self._batches(specs, L, budget):
            captures = self._captured(enc.ids, batch)
            for spec in batch:
                out[spec.key] = self._layer_ops(enc, spec, captures[spec.key], budget, None)
        return out

    def ess_table(
        self,
        inputs,
        layers=None,
        *,
        tol: float = DEFAULT_TOL,
        relative: bool = False,
        splits=None,
        progress: bool | None = None,
        memory_budget: int | None = None,
        max_seconds=DEFAULT_MAX_SECONDS,
        device=None,
        dtype=None,
    ) -> pd.DataFrame:
        """Tolerance- and entropy-ESS of every mixer, channel and split of the layers.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor
            A text (the tokenizer's, or the handle's own format) or token ids.
        layers : int or iterable of int, optional
            Which layers (every layer with a mixer by default; MLP-only blocks,
            ``mlp_only_layers``, have no rows).
        tol : float, default ``DEFAULT_TOL``
            Tolerance of the tolerance-ESS: singular values ``> tol`` count.
        relative : bool, default False
            Count singular values ``> tol * sigma_1`` of each split instead.
        splits : optional
            Which splits: ints in ``1 .. L-1``, a range, or an int stride ``k`` (every
            k-th split, always with ``L - 1``); all by default. The ``split`` column
            holds the split numbers.
        progress : bool, optional
            Show a tqdm bar over channels of every layer (default: when there is more
            than one layer or the estimate exceeds 30 s).
        memory_budget : int, optional
            Bytes allowed (the handle's budget by default). Layers are recorded in
            as few forward passes as the budget allows.
        max_seconds : float or None, default 1800
            Refuse work estimated (``estimate``) above this many seconds; None: no
            limit. Above 30 s the estimate is logged as a warning.
        device : str or torch.device, optional
            Where the spectra are computed; by default the core's choice.
        dtype : torch.dtype, optional
            Working precision of the spectra, float64 by default.

        Returns
        -------
        pandas.DataFrame
            One row per (layer, mixer, channel, split), columns ``layer, mixer,
            kind, channel, split, token, tolerance_ess, entropy_ess, bound, tss``
            (``ess_widgets.adapters.table``). ``attrs`` holds ``model``, ``tol``,
            ``relative``, ``tokens``, ``token_ids``, ``splits`` and
            ``channel_label`` (``{kind: "head" or "channel"}``).

        Examples
        --------
        The average ESS of each layer's mixers:

        >>> table.groupby(["layer", "mixer"])["entropy_ess"].mean()  # doctest: +SKIP
        """
        relative = check_flag(relative, "relative")
        budget = self._budget(memory_budget)
        max_seconds = _check_max_seconds(max_seconds)
        specs = self.specs(layers)
        enc = self.encode(inputs)
        L = len(enc)
        split_list = normalize_splits(splits, L)
        self._check_memory(specs, L, budget)
        est = self._estimate(specs, L, split_list, budget)
        self._check_time(est, max_seconds, "ess_table")
        tokens = token_dtype(enc.tokens)
        options = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        frames = []
        show = (len(specs) > 1 or est["seconds"] > 30) if progress is None else bool(progress)
        total = sum(s.num_channels for s in specs)
        desc = f"ESS ({est['seconds']:.0f} s estimated)" if est["seconds"] > 30 else "ESS"
        with tqdm(total=total, desc=desc, unit="channel", disable=not show) as bar:
            for batch in self._batches(specs, L, budget):
                captures = self._captured(enc.ids, batch)
                for spec in batch:
                    ops = self._layer_ops(enc, spec, captures.pop(spec.key), budget, split_list)
                    bar.set_postfix_str(f"layer {spec.layer} {spec.mixer}", refresh=False)
                    # progress within the layer: about one step every 2 s of work
                    steps = min(spec.num_channels, max(1, int(est["per_layer"][spec.key] / 2)))
                    frame = layer_frame(
                        ops,
                        tol=tol,
                        relative=relative,
                        tokens=tokens,
                        splits=split_list,
                        progress=bar.update,
                        chunks=steps,
                        **options,
                    )
                    frames.append(frame)
                    del ops
        if not frames:
            raise ValueError(
                f"The layers {self._layer_list(layers)} have no sequence mixer (MLP-only): "
                f"choose among {self.mixer_layers}."
            )
        return join_layers(
            frames,
            enc,
            model=self.name,
            tol=tol,
            relative=relative,
            splits=split_list,
            channel_label={s.kind: s.channel_label for s in specs},
        )
