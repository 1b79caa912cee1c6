"""``ModelHandle``: a transformers model (and tokenizer) seen as per-layer operators.

One forward pass with recording hooks gives every requested layer's operators:
attention maps per head, or dt, A, B, C per SSM channel or head. From there
``operators`` returns one layer's ``LayerOperators`` and ``ess_table`` the tidy
per-layer, per-head (or per-channel), per-split ESS table.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core import DEFAULT_TOL
from .architectures import (
    FAMILIES,
    MixerLayer,
    context_limit,
    find_layers,
)
from .attention import AttentionAdapter
from .base import MixerAdapter
from .layer_operators import LayerOperators
from .mamba import MambaAdapter
from .mamba2 import Mamba2Adapter
from .memory import check_budget, require
from .table import join_layers, layer_frame, token_dtype
from .tokens import Encoded, encode

__all__ = ["ModelHandle", "DEFAULT_TOL"]

ADAPTERS: dict[str, MixerAdapter] = {
    a.kind: a for a in (AttentionAdapter(), MambaAdapter(), Mamba2Adapter())
}


class _StopForward(Exception):
    """Raised by a hook once the last requested layer has been recorded."""


class ModelHandle:
    """A causal language model, seen layer by layer as causal operators.

    Build it with ``ess_widgets.load``; it puts the model in eval mode and, for
    attention models, switches it to eager attention (the only implementation
    that returns attention maps).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model of a supported family (``supported_families()``).
    tokenizer : transformers tokenizer, optional
        Needed for text input; token ids work without one.
    name : str, optional
        Shown in reprs and table metadata.
    memory_budget : int, optional
        Bytes one call may allocate for captured maps, spectra and dense operators
        (2 GiB by default); larger inputs raise a ValueError that says how many
        tokens fit.
    add_special_tokens : bool, default True
        Passed to the tokenizer (e.g. Llama's BOS token).

    Attributes
    ----------
    model, tokenizer, name, memory_budget
    num_layers : int
    layer_kinds : list of str
        ``"attention"``, ``"mamba"`` or ``"mamba2"`` per layer.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        name: str | None = None,
        memory_budget: int | None = None,
        add_special_tokens: bool = True,
    ):
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise TypeError(
                "`model` must be a transformers PreTrainedModel (or a name for "
                f"ess_widgets.load), got {type(model).__name__}."
            )
        self._layers: list[MixerLayer] = find_layers(model)
        self.model = model.eval()
        if any(layer.kind == "attention" for layer in self._layers):
            _use_eager_attention(model)
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.memory_budget = check_budget(memory_budget)
        self.add_special_tokens = bool(add_special_tokens)

    # ------------------------------------------------------------------ facts
    @property
    def config(self):
        """The model's transformers config."""
        return self.model.config

    @property
    def family(self) -> str:
        """The model family (``"Llama"``, ``"Mamba"``, ...)."""
        return FAMILIES[self.config.model_type][0]

    @property
    def num_layers(self) -> int:
        """Number of layers with a sequence mixer."""
        return len(self._layers)

    @property
    def layer_kinds(self) -> list[str]:
        """The mixer kind of every layer."""
        return [layer.kind for layer in self._layers]

    @property
    def context_length(self) -> int | None:
        """The longest input the model accepts, None without a position limit."""
        return context_limit(self.config)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.model.parameters()).device

    def num_channels(self, layer: int) -> int:
        """Number of operators (heads or channels) of a layer."""
        spec = self._layers[self._layer_index(layer)]
        return ADAPTERS[spec.kind].num_channels(spec, self.config)

    def __repr__(self) -> str:
        kinds = sorted(set(self.layer_kinds))
        return (
            f"ModelHandle({self.name!r}, {self.family}, {self.num_layers} layers "
            f"({', '.join(kinds)}), tokenizer={'yes' if self.tokenizer else 'no'})"
        )

    # ----------------------------------------------------------------- inputs
    def encode(self, inputs) -> Encoded:
        """Token ids and token strings of a text or of token ids.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor of shape (L,) or (1, L)

        Returns
        -------
        Encoded
            ``ids`` (L,), ``tokens`` (readable) and ``raw_tokens``.

        Raises
        ------
        ValueError
            Empty text, text without a tokenizer, fewer than 2 tokens, ids outside
            the vocabulary, or more tokens than the model's context length.
        """
        enc = encode(inputs, self.tokenizer, add_special_tokens=self.add_special_tokens)
        vocab = getattr(self.config, "vocab_size", None)
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
        return enc

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
        if layers is None:
            return list(range(self.num_layers))
        if isinstance(layers, Iterable) and not isinstance(layers, (str, bytes)):
            out = [self._layer_index(layer) for layer in layers]
            if not out:
                raise ValueError("`layers` is empty: pass None for all layers.")
            return sorted(set(out))
        return [self._layer_index(layers)]

    # ---------------------------------------------------------------- capture
    def _check_memory(self, specs: list[MixerLayer], L: int, budget: int) -> None:
        for spec in specs:
            adapter = ADAPTERS[spec.kind]
            C = adapter.num_channels(spec, self.config)
            require(
                f"Layer {spec.index} ({C} {adapter.channel}s, {spec.kind})",
                lambda length, spec=spec, adapter=adapter: (
                    adapter.footprint(spec, self.config, length).peak
                ),
                L,
                budget,
            )

    def _batches(self, specs: list[MixerLayer], L: int, budget: int) -> list[list[MixerLayer]]:
        """Group layers so that one forward pass records a group within the budget."""
        batches: list[list[MixerLayer]] = []
        held, extra = 0, 0
        for spec in specs:
            fp = ADAPTERS[spec.kind].footprint(spec, self.config, L)
            if batches and held + fp.capture + max(extra, fp.peak - fp.capture) <= budget:
                batches[-1].append(spec)
                held += fp.capture
                extra = max(extra, fp.peak - fp.capture)
            else:
                batches.append([spec])
                held, extra = fp.capture, fp.peak - fp.capture
        return batches

    def _record(self, ids: torch.Tensor, specs: list[MixerLayer]) -> dict:
        """Run the model once on ``ids``; return the records of ``specs`` by layer."""
        store: dict = {}
        last = max(specs, key=lambda s: s.index)

        def stop(module, args, output):
            raise _StopForward

        base = getattr(self.model, "base_model", self.model)
        with contextlib.ExitStack() as stack:
            for kind in dict.fromkeys(s.kind for s in specs):
                group = [s for s in specs if s.kind == kind]
                stack.enter_context(ADAPTERS[kind].recording(group, store))
            handle = last.module.register_forward_hook(stop)
            stack.callback(handle.remove)
            try:
                with torch.no_grad():
                    base(input_ids=ids[None].to(self.device), use_cache=False)
            except _StopForward:
                pass
        missing = [s.index for s in specs if s.index not in store]
        if missing:
            raise RuntimeError(
                f"The forward pass recorded nothing for layers {missing}: the model did not "
                "run the mixers the adapter expects."
            )
        return store

    def _operators(self, enc: Encoded, spec: MixerLayer, record, budget: int) -> LayerOperators:
        adapter = ADAPTERS[spec.kind]
        C = adapter.num_channels(spec, self.config)

        def build(index):
            return adapter.operator(record, spec, index)

        def dense_bytes(n: int, length: int) -> int:
            return adapter.footprint(spec, self.config, length).dense * n // C

        return LayerOperators(
            layer=spec.index,
            kind=spec.kind,
            channel=adapter.channel,
            tokens=enc.tokens,
            token_ids=enc.ids,
            num_channels=C,
            memory_budget=budget,
            record=record,
            build=build,
            dense_bytes=dense_bytes,
        )

    # ------------------------------------------------------------------ public
    def operators(self, inputs, layer: int, *, memory_budget: int | None = None) -> LayerOperators:
        """The causal operators of one layer on one input.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor of shape (L,) or (1, L)
            A text (needs the tokenizer) or token ids.
        layer : int
            Layer index; negative counts from the end.
        memory_budget : int, optional
            Bytes allowed (the handle's budget by default).

        Returns
        -------
        LayerOperators
            ``kind``, ``tokens``, ``dense()`` ``(C, L, L)``, ``spectra()``
            ``(C, L-1, K)``, ``tss`` ``(C, L-1)``; ``C`` heads (attention, Mamba2)
            or inner channels (Mamba).

        Raises
        ------
        ValueError
            Bad input (see ``encode``), or an input too long for the budget.
        """
        budget = self.memory_budget if memory_budget is None else check_budget(memory_budget)
        spec = self._layers[self._layer_index(layer)]
        enc = self.encode(inputs)
        self._check_memory([spec], len(enc), budget)
        record = self._record(enc.ids, [spec])[spec.index]
        return self._operators(enc, spec, record, budget)

    def ess_table(
        self,
        text,
        layers=None,
        tol: float = DEFAULT_TOL,
        relative: bool = False,
        *,
        progress: bool | None = None,
        memory_budget: int | None = None,
        device=None,
        dtype=None,
    ) -> pd.DataFrame:
        """Tolerance- and entropy-ESS of every head or channel, split and layer.

        Parameters
        ----------
        text : str or sequence of int or torch.Tensor
            A text (needs the tokenizer) or token ids.
        layers : int or iterable of int, optional
            Which layers (all by default).
        tol : float, default 1e-3
            Tolerance of the tolerance-ESS: singular values ``> tol`` count.
        relative : bool, default False
            Count singular values ``> tol * sigma_1`` of each split instead.
        progress : bool, optional
            Show a tqdm bar over layers (default: when there is more than one).
        memory_budget : int, optional
            Bytes allowed (the handle's budget by default). Layers are recorded in
            as few forward passes as the budget allows.
        device : str or torch.device, optional
            Where the spectra are computed; by default the core's choice: SSM
            recurrences on CUDA when available, dense attention maps on the CPU
            (one small solve per split is faster there).
        dtype : torch.dtype, optional
            Working precision of the spectra, float64 by default.

        Returns
        -------
        pandas.DataFrame
            One row per (layer, channel, split), columns ``layer, kind, channel,
            split, token, tolerance_ess, entropy_ess, bound, tss`` (see
            ``ess_widgets.adapters.table``). ``attrs`` holds ``model``, ``tol``,
            ``relative``, ``tokens``, ``token_ids`` and ``channel`` (what a channel
            is, per kind). Spectra: see ``device``.

        Examples
        --------
        Aggregate as docs/definitions.md says, e.g. the average ESS of a layer:

        >>> table.groupby("layer")["entropy_ess"].mean()  # doctest: +SKIP
        """
        budget = self.memory_budget if memory_budget is None else check_budget(memory_budget)
        indices = self._layer_list(layers)
        specs = [self._layers[i] for i in indices]
        enc = self.encode(text)
        L = len(enc)
        self._check_memory(specs, L, budget)
        tokens = token_dtype(enc.tokens)
        options = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        frames = []
        show = len(specs) > 1 if progress is None else bool(progress)
        with tqdm(total=len(specs), desc="ESS by layer", unit="layer", disable=not show) as bar:
            for batch in self._batches(specs, L, budget):
                store = self._record(enc.ids, batch)
                for spec in batch:
                    ops = self._operators(enc, spec, store.pop(spec.index), budget)
                    frame = layer_frame(ops, tol=tol, relative=relative, tokens=tokens, **options)
                    frames.append(frame)
                    del ops
                    bar.update(1)
        table = join_layers(
            frames,
            enc,
            model=self.name,
            tol=tol,
            relative=relative,
            channel={kind: ADAPTERS[kind].channel for kind in set(self.layer_kinds)},
        )
        return table


def _use_eager_attention(model) -> None:
    """Switch a model to eager attention (the one that returns attention maps)."""
    current = getattr(model.config, "_attn_implementation", None)
    if current == "eager":
        return
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"
