"""Which transformers architectures are supported, and where their mixers live.

The registry is declarative and filled at import by the adapter modules, one
mixer kind per module (``attention``, ``mamba``, ``mamba2``, ...). Each adapter
module calls

- ``register_adapter(adapter, classes=(...))``: the ``MixerAdapter`` (``base``) and
  the class names of the mixer modules it reads (``"MambaMixer"``, ...);
- ``register_family(model_type, name, group)``: a supported ``config.model_type``,
  the family name shown to users (``"Llama"``) and the group it is listed under by
  ``supported_families()`` (``"attention"``, ``"mamba"``, ``"mamba2"``, ``"hybrid"``,
  ...).

A new mixer kind is one new module in ``ess_widgets/adapters/`` that makes these
two calls; nothing else needs editing (``ensure_registered`` imports every module
of the package that is not part of the handle's own machinery, ``_INFRA``).

Vocabulary (the same in every table and attribute):

- **layer**: a decoder block index ``0 .. num_layers - 1``;
- **mixer**: the name of a sequence mixer inside a block (``"attention"``,
  ``"ssm"``, ``"linear_attention"``, ``"conv"``); a block holds zero (MLP-only),
  one or several mixers, listed in the order the forward pass runs them;
- **kind**: the operator family of a mixer (``"softmax_attention"``,
  ``"selective_ssm"``, ``"ssd"``, ...), as ``CausalOperator.kind``;
- **channel**: one causal operator of a mixer (a head, or an inner channel);
  ``channel_label`` says which word users see (``"head"`` or ``"channel"``).

``find_blocks`` returns, per block, its ``MixerLayer`` s in forward order. The
block of a mixer is the decoder block that contains it; where a block holds
several mixers, a dry run of the model on 4 tokens with forward pre-hooks records
the order they run in (Zamba2 registers its shared attention after its SSM but
runs it first).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "Family",
    "MixerLayer",
    "find_blocks",
    "register_adapter",
    "register_family",
    "supported_families",
]


@dataclass(frozen=True)
class Family:
    """A supported ``config.model_type``.

    Attributes
    ----------
    model_type : str
        ``config.model_type`` (``"llama"``).
    name : str
        The family name shown to users (``"Llama"``).
    group : str
        Where ``supported_families()`` lists it: ``"attention"``, ``"mamba"``,
        ``"mamba2"``, ``"hybrid"``, ...
    """

    model_type: str
    name: str
    group: str


# model_type -> Family; filled by register_family.
FAMILIES: dict[str, Family] = {}
# adapter name -> MixerAdapter; filled by register_adapter.
ADAPTERS: dict = {}
# mixer module class name -> adapter name; filled by register_adapter.
MIXER_CLASSES: dict[str, str] = {}

# Modules of this package that are the handle's machinery, not adapters.
_INFRA = frozenset(
    {
        "architectures",
        "base",
        "estimate",
        "handle",
        "interface",
        "layer_operators",
        "loading",
        "memory",
        "mqar",
        "table",
        "tokens",
    }
)
_REGISTERED = [False]


def register_family(model_type: str, name: str, group: str) -> None:
    """Declare ``config.model_type`` supported, shown as ``name`` under ``group``."""
    FAMILIES[model_type] = Family(model_type, name, group)


def register_adapter(adapter, *, classes=()) -> None:
    """Register a ``MixerAdapter`` and the class names of the mixer modules it reads.

    Parameters
    ----------
    adapter : MixerAdapter
        Its ``name`` is the registry key.
    classes : iterable of str
        Mixer module class names (``"MambaMixer"``); the attention adapter finds its
        modules the way transformers records attention maps, with no class list.
    """
    if not adapter.name:
        raise ValueError(f"{type(adapter).__name__} has no `name`.")
    ADAPTERS[adapter.name] = adapter
    for cls in classes:
        MIXER_CLASSES[cls] = adapter.name


def ensure_registered() -> None:
    """Import every adapter module of this package once (they register themselves)."""
    if _REGISTERED[0]:
        return
    _REGISTERED[0] = True
    package = __name__.rsplit(".", 1)[0]
    path = importlib.import_module(package).__path__
    names = [
        info.name
        for info in pkgutil.iter_modules(path)
        if not (info.name.startswith("_") or info.name in _INFRA or info.ispkg)
    ]
    # The first adapters first, then the rest by name: the order families are listed
    # in must not depend on which new module sorts before "mamba".
    first = [name for name in ("attention", "mamba", "mamba2") if name in names]
    for name in first + [name for name in names if name not in first]:
        importlib.import_module(f"{package}.{name}")


@dataclass(frozen=True, eq=False)
class MixerLayer:
    """One sequence mixer of one block.

    Attributes
    ----------
    index : int
        Layer (block) index, 0-based.
    mixer : str
        The mixer's name in its block (``"attention"``, ``"ssm"``, ...).
    adapter : str
        The registry key of the adapter that reads it (``"attention"``, ``"mamba"``,
        ``"mamba2"``, ...).
    module : torch.nn.Module
        The mixer module (attention module, or Mamba/Mamba2 mixer).
    window : int or None
        Sliding-window width of an attention layer, None for full attention.
    """

    index: int
    mixer: str
    adapter: str
    module: nn.Module
    window: int | None = None

    @property
    def key(self) -> tuple[int, str]:
        """``(layer, mixer)``: where records and operators are stored."""
        return (self.index, self.mixer)


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
    >>> {"Jamba", "Bamba", "GraniteMoeHybrid"} <= set(supported_families()["hybrid"])
    True
    """
    ensure_registered()
    out: dict[str, list[str]] = {}
    for family in FAMILIES.values():
        out.setdefault(family.group, []).append(family.name)
    # the single-kind groups first, in a fixed order; hybrids last
    first = [g for g in ("attention", "mamba", "mamba2") if g in out]
    rest = sorted(g for g in out if g not in first and g != "hybrid")
    order = first + rest + (["hybrid"] if "hybrid" in out else [])
    return {group: out[group] for group in order}


_GROUP_LABELS = {
    "attention": "softmax attention",
    "mamba": "selective SSM",
    "mamba2": "SSD",
    "hybrid": "hybrids of these",
}


def _families_text() -> str:
    return "; ".join(
        f"{_GROUP_LABELS.get(group, group)}: {', '.join(names)}"
        for group, names in supported_families().items()
    )


def unsupported_message(what: str) -> str:
    """The error text for an architecture outside ``FAMILIES``."""
    return (
        f"{what} is not supported by ess_widgets. Supported families ({_families_text()}). "
        "Encoder-only and encoder-decoder models (BERT, T5, ...) have no causal mixer to "
        "measure."
    )


def check_supported(config) -> Family:
    """The ``Family`` of a config, or a ValueError naming the supported families."""
    ensure_registered()
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
    """Self-attention modules, found like transformers records them."""
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
        # Mistral and MiniMax apply config.sliding_window to every attention layer.
        if not sliding and config.model_type not in ("mistral", "minimax"):
            window = None
    return int(window) if window else None


def _mixer_modules(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(module) -> (module, adapter name)`` of every sequence mixer of the model.

    Registered mixer classes first (a module listed both ways, such as MiniMax's
    lightning attention, is read by its own adapter), then attention modules.
    """
    found = {}
    for module in model.modules():
        adapter = MIXER_CLASSES.get(type(module).__name__)
        if adapter is not None:
            found[id(module)] = (module, adapter)
    for module in _attention_modules(model):
        found.setdefault(id(module), (module, "attention"))
    return found


def _decoder_blocks(model: nn.Module, mixers: dict, expected: int | None) -> list[nn.Module]:
    """The decoder blocks: the ``nn.ModuleList`` that holds the most mixers."""
    best, best_count = None, 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        if expected is not None and len(module) != expected:
            continue
        count = sum(id(m) in mixers for child in module for m in child.modules())
        if count > best_count:
            best, best_count = module, count
    return list(best) if best is not None else []


def _run_order(model: nn.Module, blocks: list[nn.Module], mixers: dict) -> list[tuple[int, int]]:
    """``(block index, id(mixer))`` in the order a forward pass on 4 tokens runs them."""
    current = [-1]
    order: list[tuple[int, int]] = []
    handles = []

    def enter(index):
        def hook(module, args):
            current[0] = index

        return hook

    def called(module, args):
        key = (current[0], id(module))
        if key not in order:
            order.append(key)

    for index, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(enter(index)))
    for module, _ in mixers.values():
        handles.append(module.register_forward_pre_hook(called))
    config = model.config
    vocab = int(getattr(config, "vocab_size", 0) or 0) or 2
    device = next(model.parameters()).device
    ids = (torch.arange(1, 5) % vocab)[None].to(device)
    base = getattr(model, "base_model", model)
    try:
        with torch.no_grad():
            base(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return order


def find_blocks(model: nn.Module) -> list[tuple[MixerLayer, ...]]:
    """The sequence mixers of every block of a supported model, in forward order.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model of a registered family (with or without its LM head).

    Returns
    -------
    list of tuple of MixerLayer
        One entry per decoder block; an empty tuple for a block without a sequence
        mixer (MLP-only). Mixer names in a block are unique (a second mixer of the
        same name gets a suffix ``"_1"``).

    Raises
    ------
    ValueError
        For an unsupported architecture (the message names the supported families),
        or when no mixer is found or a mixer ran outside the decoder blocks.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(unsupported_message(f"{type(model).__name__} (no transformers config)"))
    family = check_supported(config)
    mixers = _mixer_modules(model)
    expected = num_layers_of(config)
    blocks = _decoder_blocks(model, mixers, expected)
    if not mixers or not blocks:
        raise ValueError(
            f"Found {len(mixers)} sequence mixers and {len(blocks)} decoder blocks in this "
            f"{family.name} model ({type(model).__name__}), but its config has {expected} "
            "layers. The model class may be a variant this adapter does not know; load it "
            "with AutoModelForCausalLM."
        )
    # Which block holds each mixer: by containment; in what order: by a dry run, only
    # where a block holds several (it would show in users' own hooks otherwise).
    holder = {}
    for index, block in enumerate(blocks):
        for module in block.modules():
            if id(module) in mixers:
                holder.setdefault(id(module), []).append(index)
    outside = [mixers[key][0] for key in mixers if key not in holder]
    shared = [mixers[key][0] for key, where in holder.items() if len(where) > 1]
    if outside or shared:
        module = (outside or shared)[0]
        raise ValueError(
            f"This {family.name} model has a {type(module).__name__} mixer "
            f"{'outside its decoder blocks' if outside else 'shared by several blocks'}: "
            "the adapter cannot tell which layer it belongs to."
        )
    order = [(holder[key][0], key) for key in mixers]  # module order
    counts = [sum(where[0] == i for where in holder.values()) for i in range(len(blocks))]
    if max(counts) > 1:
        run = _run_order(model, blocks, mixers)
        position = {key: n for n, (_, key) in enumerate(run)}
        never = [mixers[key][0] for key in mixers if key not in position]
        if never:
            raise ValueError(
                f"A {type(never[0]).__name__} mixer of this {family.name} model never ran "
                "in a forward pass: the adapter cannot record it."
            )
        order.sort(key=lambda item: (item[0], position[item[1]]))
    per_block: list[list[MixerLayer]] = [[] for _ in blocks]
    for index, key in order:
        module, adapter_name = mixers[key]
        adapter = ADAPTERS[adapter_name]
        names = {layer.mixer for layer in per_block[index]}
        name, n = adapter.mixer, 1
        while name in names:
            name, n = f"{adapter.mixer}_{n}", n + 1
        window = _window(module, config, index) if adapter_name == "attention" else None
        per_block[index].append(
            MixerLayer(index=index, mixer=name, adapter=adapter_name, module=module, window=window)
        )
    return [tuple(layers) for layers in per_block]
