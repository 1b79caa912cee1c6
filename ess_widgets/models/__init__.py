"""Small MQAR models whose mixers run through ``ess_widgets.operators`` (torch.nn lives here).

- ``MQARModel`` / ``MQARConfig``: embedding, two [norm, mixer, residual, norm, MLP,
  residual] blocks, readout; mixers LA, WLA, GLA, SA, S6 (``mixers``). S6 options:
  ``expand`` (``d_inner = expand * d_model``), ``gate`` (Mamba's output gate);
  ``mlp_ratio=0`` drops the MLPs (Mamba's block).
  ``model.layer_operators(inputs)`` gives each layer's ``CausalOperator``: the
  operator the forward pass applies.
- ``mqar_model_names()``, ``load_mqar_model(name)``: the shipped, trained models
  (safetensors in the package, offline); ``mqar-s6ng-*`` are S6 in Mamba's block
  without the output gate (``MQARConfig(expand=2, mlp_ratio=0, gate=False)``).
- ``experiment``: accuracy, ESS per layer, TSS and per-kv ratios; the shipped
  results are ``mqar_results.csv`` and ``mqar_correlations.csv`` (``results_path``).
- ``training``: the training loop and its options (task, transition regularizer,
  S6-/GLA-style initialization, distillation): ``TrainConfig``, ``train``.
- ``paper``: the results of the paper's other experiments (``paper_path``) and the
  shipped selective-copying and compression models (``task_model_names()``,
  ``load_task_model(name)``).
"""

from pathlib import Path

from .experiment import ess_curve, layer_ess, measure_model
from .model import MQARConfig, MQARModel, load_model_file, save_model
from .paper import load_task_model, paper_path, task_model_names
from .registry import load_mqar_model, model_name, mqar_model_names
from .training import TrainConfig, train

__all__ = [
    "MQARModel",
    "MQARConfig",
    "mqar_model_names",
    "load_mqar_model",
    "model_name",
    "measure_model",
    "layer_ess",
    "ess_curve",
    "save_model",
    "load_model_file",
    "results_path",
    "TrainConfig",
    "train",
    "paper_path",
    "task_model_names",
    "load_task_model",
]


def results_path(which: str = "results") -> Path:
    """Path of the shipped ``mqar_results.csv`` (``which="results"``) or
    ``mqar_correlations.csv`` (``which="correlations"``)."""
    if which not in ("results", "correlations"):
        raise ValueError(f"`which` must be 'results' or 'correlations', got {which!r}.")
    return Path(__file__).resolve().parent / f"mqar_{which}.csv"
