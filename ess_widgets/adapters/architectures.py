"""Which transformers architectures are supported, and where their mixers live.

A model is supported when its ``config.model_type`` is in ``FAMILIES``. Each
family names the kind of its sequence mixer:

- ``"attention"``: softmax attention, one causal operator per query head
  (grouped-query attention included: the maps are per query head);
- ``"mamba"``: selective SSM (S6), one operator per inner channel;
- ``"mamba2"``: SSD, one operator per head (shared by the head's channels);
- ``"gated_deltanet"``, ``"kimi_delta_attention"``: the gated delta rule, one
  operator per value head (``adapters.delta_rule``);
- ``"hybrid"``: a mix of attention layers and Mamba, Mamba2 or delta-rule layers.

``find_layers`` returns one ``MixerLayer`` per layer, in layer order, with the
module whose forward the capture code hooks and the kind of that layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["FAMILIES", "MixerLayer", "find_layers", "supported_families"]

# model_type -> (family name shown to users, mixer kind)
FAMILIES: dict[str, tuple[str, str]] = {
    "gpt2": ("GPT-2", "attention"),
    "llama": ("Llama", "attention"),
    "qwen2": ("Qwen2", "attention"),
    "mistral": ("Mistral", "attention"),
    "phi": ("Phi", "attention"),
    "gpt_neox": ("GPT-NeoX", "attention"),
    "gemma": ("Gemma", "attention"),
    "mamba": ("Mamba", "mamba"),
    "falcon_mamba": ("FalconMamba", "mamba"),
    "mamba2": ("Mamba2", "mamba2"),
    "jamba": ("Jamba", "hybrid"),
    "bamba": ("Bamba", "hybrid"),
    "granitemoehybrid": ("GraniteMoeHybrid", "hybrid"),
    "qwen3_next": ("Qwen3-Next", "hybrid"),
    "olmo_hybrid": ("OLMo Hybrid", "hybrid"),
    "kimi_linear": ("Kimi Linear", "hybrid"),
    "bailing_hybrid": ("Ling (bailing_hybrid)", "hybrid"),
}

# SSM mixer classes (by name) -> kind; each calls a module-level scan function.
_SSM_MIXERS = {
    "MambaMixer": "mamba",
    "FalconMambaMixer": "mamba",
    "JambaMambaMixer": "mamba",
    "Mamba2Mixer": "mamba2",
    "BambaMixer": "mamba2",
    "GraniteMoeHybridMambaLayer": "mamba2",
    "Qwen3NextGatedDeltaNet": "gated_deltanet",
    "OlmoHybridGatedDeltaNet": "gated_deltanet",
    "KimiLinearDeltaAttention": "kimi_delta_attention",
    "BailingHybridDeltaAttention": "kimi_delta_attention",
}


@dataclass(frozen=True, eq=False)
class MixerLayer:
    """One layer's sequence mixer.

    Attributes
    ----------
    index : int
        Layer index, 0-based.
    kind : str
        ``"attention"``, ``"mamba"`` or ``"mamba2"``.
    module : torch.nn.Module
        The mixer module (attention module, or Mamba/Mamba2 mixer).
    window : int or None
        Sliding-window width of an attention layer, None for full attention.
    """

    index: int
    kind: str
    module: nn.Module
    window: int | None = None


def supported_families() -> dict[str, list[str]]:
    """Supported model families, grouped by mixer kind.

    Returns
    -------
    dict of str to list of str
        ``{"attention": ["GPT-2", "Llama", ...], "mamba": [...], "mamba2": [...],
        "hybrid": [...]}``.

    Examples
    --------
    >>> supported_families()["mamba"]
    ['Mamba', 'FalconMamba']
    >>> supported_families()["hybrid"][:3]
    ['Jamba', 'Bamba', 'GraniteMoeHybrid']
    """
    out: dict[str, list[str]] = {}
    for family, kind in FAMILIES.values():
        out.setdefault(kind, []).append(family)
    return out


def _families_text() -> str:
    labels = {
        "attention": "softmax attention",
        "mamba": "selective SSM",
        "mamba2": "SSD",
        "hybrid": "hybrids of these",
    }
    return "; ".join(
        f"{labels[kind]}: {', '.join(names)}" for kind, names in supported_families().items()
    )


def unsupported_message(what: str) -> str:
    """The error text for an architecture outside ``FAMILIES``."""
    return (
        f"{what} is not supported by ess_widgets. Supported families ({_families_text()}). "
        "Encoder-only and encoder-decoder models (BERT, T5, ...) have no causal mixer to "
        "measure."
    )


def model_type(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or ""


def check_supported(config) -> tuple[str, str]:
    """Return ``(family, kind)`` for a config, or raise a ValueError naming the families."""
    mt = getattr(config, "model_type", None) or ""
    if mt not in FAMILIES:
        name = type(config).__name__
        raise ValueError(unsupported_message(f"model_type {mt!r} ({name})"))
    return FAMILIES[mt]


def num_layers_of(config) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def context_limit(config) -> int | None:
    """The longest sequence the model's position encoding accepts, or None (SSMs)."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules in forward order, found like transformers records them."""
    spec = getattr(type(model), "_can_record_outputs", None) or {}
    spec = spec.get("attentions")
    target, layer_name = None, None
    if isinstance(spec, type):
        target = spec
    elif spec is not None and hasattr(spec, "target_class"):
        target, layer_name = spec.target_class, spec.layer_name
    found = []
    for name, module in model.named_modules():
        if target is not None:
            if not isinstance(module, target):
                continue
            if layer_name is not None and f".{layer_name.strip('.')}." not in f"{name}.":
                continue
        elif not type(module).__name__.endswith("Attention") or "cross" in name.lower():
            continue
        found.append(module)
    return found


def _window(module: nn.Module, config, index: int) -> int | None:
    if hasattr(module, "sliding_window"):
        window = module.sliding_window
    else:
        layer_types = getattr(config, "layer_types", None)
        sliding = (
            layer_types is not None
            and index < len(layer_types)
            and layer_types[index] == "sliding_attention"
        )
        window = getattr(config, "sliding_window", None)
        if not sliding and config.model_type != "mistral":
            window = None
    return int(window) if window else None


def find_layers(model: nn.Module) -> list[MixerLayer]:
    """The sequence mixer of every layer of a supported model, in layer order.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model of a family in ``FAMILIES`` (with or without its LM head).

    Returns
    -------
    list of MixerLayer

    Raises
    ------
    ValueError
        For an unsupported architecture (the message names the supported families),
        or when the mixers found do not match the configured number of layers.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(unsupported_message(f"{type(model).__name__} (no transformers config)"))
    family, kind = check_supported(config)
    attention = set()
    if kind in ("attention", "hybrid"):
        attention = {id(m) for m in _attention_modules(model)}
    found = []  # (module, kind) in forward order
    for module in model.modules():
        if id(module) in attention:
            found.append((module, "attention"))
        elif kind != "attention" and type(module).__name__ in _SSM_MIXERS:
            found.append((module, _SSM_MIXERS[type(module).__name__]))
    expected = num_layers_of(config)
    if not found or (expected is not None and len(found) != expected):
        raise ValueError(
            f"Found {len(found)} sequence mixers in this {family} model "
            f"({type(model).__name__}), but its config has {expected} layers. The model "
            "class may be a variant this adapter does not know; load it with "
            "AutoModelForCausalLM."
        )
    layers = []
    for index, (module, layer_kind) in enumerate(found):
        window = _window(module, config, index) if layer_kind == "attention" else None
        layers.append(MixerLayer(index=index, kind=layer_kind, module=module, window=window))
    return layers
