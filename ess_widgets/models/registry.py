"""Shipped MQAR models by name: ``mqar_model_names()``, ``load_mqar_model(name)``.

Names read ``mqar-<family>-<knob><state>-kv<num_pairs>``, e.g. ``mqar-gla-dk8-kv8``
(``dk``: key size of LA/WLA/GLA, ``dh``: head size of SA, ``ds``: ``d_state`` of S6).
``mqar-s6ng-ds<state>-kv<num_pairs>`` are S6 models in Mamba's block (expansion 2,
``d_inner = 2 d_model``, no MLP) without its output gate ``silu(z)``
(``MQARConfig(expand=2, mlp_ratio=0, gate=False)``), with fewer parameters than the
other families' models; ``mqar-s6-*`` have expansion 1, an MLP and the gate.
The weights are safetensors files inside the package (``models/weights``), read
offline; their header holds the config and the training record.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from .model import MQARModel, load_model_file

__all__ = ["mqar_model_names", "load_mqar_model", "model_name", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_KNOB = {"la": "dk", "wla": "dk", "gla": "dk", "sa": "dh", "s6": "ds", "s6ng": "ds"}
# (expand, mlp_ratio, gate) of the "s6ng" models: Mamba's block without its output gate.
S6NG_BLOCK = (2, 0, False)


def model_name(
    family: str,
    state: int,
    num_pairs: int,
    *,
    expand: int = 1,
    mlp_ratio: int = 2,
    gate: bool = True,
) -> str:
    """The built-in name of a model, e.g. ``model_name("gla", 8, 8) == "mqar-gla-dk8-kv8"``.

    S6 in Mamba's block without its output gate is ``s6ng``:

    >>> model_name("s6", 8, 8, expand=2, mlp_ratio=0, gate=False)
    'mqar-s6ng-ds8-kv8'
    """
    if (expand, mlp_ratio, gate) == (1, 2, True):
        tag = family
    elif family == "s6" and (expand, mlp_ratio, gate) == S6NG_BLOCK:
        tag = "s6ng"
    else:
        raise ValueError(
            f"No built-in name for family {family!r} with expand={expand}, "
            f"mlp_ratio={mlp_ratio}, gate={gate}: names exist for expand=1, mlp_ratio=2, "
            "gate=True (every family) and for 's6' with expand=2, mlp_ratio=0, gate=False."
        )
    return f"mqar-{tag}-{_KNOB[tag]}{state}-kv{num_pairs}"


def mqar_model_names() -> list[str]:
    """Names of the shipped MQAR models (sorted by family, then file name)."""
    order = {f: i for i, f in enumerate(_KNOB)}
    names = [p.stem for p in WEIGHTS_DIR.glob("mqar-*.safetensors")]
    return sorted(names, key=lambda n: (order.get(n.split("-")[1], 9), n))


@lru_cache(maxsize=8)
def _read(name: str):
    return load_model_file(WEIGHTS_DIR / f"{name}.safetensors")


def load_mqar_model(name: str, *, with_record: bool = False):
    """Load a shipped MQAR model (eval mode, CPU, float32), offline.

    Parameters
    ----------
    name : str
        One of ``mqar_model_names()``.
    with_record : bool, default False
        Also return the training record (family, state, num_pairs, seq_len,
        vocab_size, seed, steps, train_accuracy, ...).

    Returns
    -------
    MQARModel, or (MQARModel, dict) with ``with_record=True``
    """
    names = mqar_model_names()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{name!r} is not a shipped MQAR model; mqar_model_names(): {names}.{hint}"
        )
    model, meta = _read(name)
    # a fresh copy, so callers may change it without touching the cache
    fresh = MQARModel(model.cfg)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    return (fresh, dict(meta.get("training", {}))) if with_record else fresh
