"""``ModelHandle``: a transformers model (and tokenizer) seen as per-layer operators.

One forward pass with recording hooks gives every requested mixer's operators:
attention maps per head, or dt, A, B, C per SSM channel or head. Everything else
(``operators``, ``layer_operators``, ``ess_table``, ``estimate``) is the shared
``OperatorHandle`` (``interface``); this module gives its one hook, ``_capture``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .architectures import ADAPTERS, MixerLayer, check_supported, context_limit, find_blocks
from .interface import DEFAULT_TOL, Capture, MixerSpec, OperatorHandle
from .memory import check_budget

__all__ = ["ModelHandle", "DEFAULT_TOL"]


class _StopForward(Exception):
    """Raised by a hook once the last requested mixer has been recorded."""


class ModelHandle(OperatorHandle):
    """A causal language model, seen block by block as causal operators.

    Build it with ``ess_widgets.load``; it puts the model in eval mode and, for
    models with attention, switches it to eager attention (the only implementation
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
        Decoder blocks (MLP-only blocks included, ``mlp_only_layers``).
    layer_kinds : list of str
        Per block its mixers in forward order joined by ``"+"`` (``"attention"``,
        ``"ssm"``, ``"attention+ssm"``), ``"mlp"`` for an MLP-only block.
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
        self.model = model.eval()
        config = model.config
        layers = find_blocks(model)
        if any(layer.adapter == "attention" for block in layers for layer in block):
            _use_eager_attention(model)
        self._mixer_layers = {layer.key: layer for block in layers for layer in block}
        self._blocks = [tuple(self._spec(layer, config) for layer in block) for block in layers]
        self.tokenizer = tokenizer
        self.name = name or getattr(config, "_name_or_path", "") or type(model).__name__
        self.memory_budget = check_budget(memory_budget)
        self._add_special_tokens = bool(add_special_tokens)

    @staticmethod
    def _spec(layer: MixerLayer, config) -> MixerSpec:
        adapter = ADAPTERS[layer.adapter]
        return MixerSpec(
            layer=layer.index,
            mixer=layer.mixer,
            kind=adapter.kind,
            channel_label=adapter.channel_label,
            num_channels=adapter.num_channels(layer, config),
            state_size=adapter.state_size(layer, config),
            footprint=lambda L: adapter.footprint(layer, config, L),
            transition=adapter.transition,
        )

    # ------------------------------------------------------------------ facts
    @property
    def config(self):
        """The model's transformers config."""
        return self.model.config

    @property
    def family(self) -> str:
        """The model family (``"Llama"``, ``"Mamba"``, ``"Falcon-H1"``, ...)."""
        return check_supported(self.config).name

    @property
    def context_length(self) -> int | None:
        """The longest input the model accepts, None without a position limit."""
        return context_limit(self.config)

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.config, "vocab_size", None)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.model.parameters()).device

    def mixer_layer(self, layer: int, mixer: str | None = None) -> MixerLayer:
        """The ``MixerLayer`` (module, adapter) of one mixer."""
        return self._mixer_layers[self.spec(layer, mixer).key]

    # ---------------------------------------------------------------- capture
    def _capture(self, ids: torch.Tensor, specs: list[MixerSpec]) -> dict:
        """Run the model once on ``ids``; the records of ``specs`` by ``(layer, mixer)``."""
        layers = [self._mixer_layers[s.key] for s in specs]
        store: dict = {}
        wanted = {layer.key for layer in layers}
        seen: set = set()

        def stop(module, args, output):
            # after the last requested mixer ran: stop, the rest is not needed
            if wanted <= set(store):
                raise _StopForward

        base = getattr(self.model, "base_model", self.model)
        with contextlib.ExitStack() as stack:
            for name in dict.fromkeys(layer.adapter for layer in layers):
                group = [layer for layer in layers if layer.adapter == name]
                stack.enter_context(ADAPTERS[name].recording(group, store))
            for module in {id(layer.module): layer.module for layer in layers}.values():
                if id(module) not in seen:
                    seen.add(id(module))
                    handle = module.register_forward_hook(stop)
                    stack.callback(handle.remove)
            try:
                with torch.no_grad():
                    base(input_ids=ids[None].to(self.device), use_cache=False)
            except _StopForward:
                pass
        missing = [layer.key for layer in layers if layer.key not in store]
        if missing:
            raise RuntimeError(
                f"The forward pass recorded nothing for {missing}: the model did not run "
                "the mixers the adapter expects."
            )
        out = {}
        for layer in layers:
            adapter, record = ADAPTERS[layer.adapter], store[layer.key]
            out[layer.key] = Capture(
                record=record,
                build=lambda index, a=adapter, r=record, m=layer: a.operator(r, m, index),
            )
        return out


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
