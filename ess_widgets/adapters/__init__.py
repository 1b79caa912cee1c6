"""Model adapters: models to per-layer causal operators and ESS tables.

``load`` (``loading``, the one loader) gives a handle for a model object, a local
folder, a hub id, a built-in name (``builtin_models()``; ``"smollm2-135m"`` works
offline) or a shipped MQAR model. Every handle is an ``OperatorHandle``
(``interface``): blocks (layers) of named mixers (``mixers(layer)``), one mixer's
``LayerOperators`` (``operators``), all of them in as few forward passes as memory
allows (``layer_operators``), the tidy per-layer, per-mixer, per-channel ESS table
(``ess_table``) and a cost estimate before any work (``estimate``).

Modules: ``architectures`` (the registry: which models, where their mixers are),
``base`` (the adapter interface, byte estimates), ``memory`` (the memory guard),
``tokens`` (inputs to ids and token strings), ``_scan`` (recording a module-level
scan function), ``estimate`` (time estimates), ``layer_operators``, ``table``,
``interface`` (``OperatorHandle``), ``handle`` (``ModelHandle``, transformers),
``mqar`` (``MQARHandle``), ``loading``; and one module per mixer kind
(``attention``, ``mamba``, ``mamba2``, ...), which registers itself.
"""

from .architectures import register_adapter, register_family, supported_families
from .handle import ModelHandle
from .interface import DEFAULT_TEXT, DEFAULT_TOL, MixerSpec, OperatorHandle
from .layer_operators import LayerOperators
from .loading import builtin_models, load
from .memory import DEFAULT_MEMORY_BUDGET
from .mqar import MQARHandle, format_mqar, mqar_tokens, parse_mqar

__all__ = [
    "load",
    "builtin_models",
    "supported_families",
    "register_adapter",
    "register_family",
    "OperatorHandle",
    "ModelHandle",
    "MQARHandle",
    "MixerSpec",
    "format_mqar",
    "parse_mqar",
    "mqar_tokens",
    "LayerOperators",
    "DEFAULT_TOL",
    "DEFAULT_TEXT",
    "DEFAULT_MEMORY_BUDGET",
]
