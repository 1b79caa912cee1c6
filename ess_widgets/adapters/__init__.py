"""Model adapters: transformers models to per-layer causal operators and ESS tables.

``load`` gives a ``ModelHandle`` for a model object, a local folder, a hub id or a
built-in name (``builtin_models()``; ``"smollm2-135m"`` works offline). The handle
returns one layer's ``LayerOperators`` (``operators``) or the tidy per-layer,
per-head or per-channel ESS table (``ess_table``).

Modules, each importing only the ones before it: ``architectures`` (which models,
where their mixers are), ``base`` (the adapter interface, byte estimates),
``memory`` (the memory guard), ``tokens`` (inputs to ids and token strings),
``_scan`` (recording a module-level scan function), ``attention``, ``mamba``,
``mamba2`` (one mixer kind each), ``layer_operators``, ``table``, ``handle``,
``mqar`` (``MQARHandle``: the shipped MQAR models, same interface, on MQAR token
ids or text such as ``"k3 v17 _ q:k3"``), ``loading``.
"""

from .architectures import supported_families
from .handle import DEFAULT_TOL, ModelHandle
from .layer_operators import LayerOperators
from .loading import builtin_models, load
from .memory import DEFAULT_MEMORY_BUDGET
from .mqar import MQARHandle, format_mqar, parse_mqar

__all__ = [
    "load",
    "builtin_models",
    "supported_families",
    "ModelHandle",
    "MQARHandle",
    "format_mqar",
    "parse_mqar",
    "LayerOperators",
    "DEFAULT_TOL",
    "DEFAULT_MEMORY_BUDGET",
]
