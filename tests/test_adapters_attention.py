"""Attention adapters: operators equal the model's own attention maps, per layer and head.

Tiny random models built from configs (seeded, offline), one per supported family;
grouped-query attention (Llama, Qwen2, Mistral, Gemma) and a sliding window (Mistral).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch
import transformers as tf

import ess_widgets.adapters as adapters
from ess_widgets import spectra

V = 64  # vocabulary of the tiny models
SMALL = {"vocab_size": V, "max_position_embeddings": 64}
LLAMA_LIKE = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention: 2 query heads per key/value head
    **SMALL,
}

CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=32,
        vocab_size=V,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "llama": lambda: tf.LlamaConfig(**LLAMA_LIKE),
    "qwen2": lambda: tf.Qwen2Config(**LLAMA_LIKE),
    "mistral": lambda: tf.MistralConfig(
        **{**LLAMA_LIKE, "num_key_value_heads": 1}, sliding_window=5
    ),
    "phi": lambda: tf.PhiConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, **SMALL
    ),
    "gpt_neox": lambda: tf.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, **SMALL
    ),
    "gemma": lambda: tf.GemmaConfig(**{**LLAMA_LIKE, "num_key_value_heads": 1}, head_dim=8),
}


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[family](), attn_implementation="eager")
    return model.eval()


def token_ids(L: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def family_model(request):
    return request.param, tiny_model(request.param)


def test_dense_equals_the_models_attention_weights(family_model):
    _, model = family_model
    handle = adapters.load(model)
    assert handle.num_layers == 2
    assert handle.layer_kinds == ["attention", "attention"]
    ids = token_ids(14)
    with torch.no_grad():
        reference = model(ids[None], output_attentions=True, use_cache=False).attentions
    H = model.config.num_attention_heads
    for layer in range(2):
        ops = handle.operators(ids, layer)
        assert ops.mixer == "attention" and ops.kind == "softmax_attention"
        assert ops.channel_label == "head"
        dense = ops.dense()
        assert dense.shape == (H, 14, 14)  # one map per query head, GQA included
        torch.testing.assert_close(dense, reference[layer][0], rtol=0, atol=1e-6)
        for head in range(H):
            torch.testing.assert_close(
                ops.dense(channels=head)[0], reference[layer][0, head], rtol=0, atol=1e-6
            )


def test_tss_is_the_cache_size(family_model):
    family, model = family_model
    ops = adapters.load(model).operators(token_ids(12), 0)
    split = torch.arange(1, 12)
    window = 5 if family == "mistral" else None
    expected = split if window is None else split.clamp(max=window)
    assert ops.tss.shape == (ops.num_channels, 11)
    assert torch.equal(ops.tss, expected.expand(ops.num_channels, 11))


def test_spectra_are_those_of_the_dense_maps():
    ops = adapters.load(tiny_model("llama")).operators(token_ids(16), 1)
    s = ops.spectra()
    assert s.shape == (4, 15, 8)
    torch.testing.assert_close(s, spectra(ops.dense()), rtol=0, atol=1e-12)
    torch.testing.assert_close(ops.spectra(channels=[1, 3]), s[[1, 3]])
    torch.testing.assert_close(ops.dense(channels=slice(1, 3)), ops.dense()[1:3])


def test_text_input_and_token_strings():
    tokenizer = word_tokenizer()
    handle = adapters.load(tiny_model("gpt2"), tokenizer)
    ops = handle.operators("the cat sat on the mat", 0)
    assert ops.tokens == ("the", " cat", " sat", " on", " the", " mat")
    assert ops.dense().shape == (4, 6, 6)


def test_ess_table_is_tidy_and_bounded():
    model = tiny_model("qwen2")
    handle = adapters.load(model, word_tokenizer())
    text = "the cat sat on the mat and the dog sat on the log"
    table = handle.ess_table(text, tol=1e-3, progress=False)
    L = len(text.split())
    assert list(table.columns) == [
        "layer",
        "mixer",
        "kind",
        "channel",
        "split",
        "token",
        "tolerance_ess",
        "entropy_ess",
        "bound",
        "tss",
    ]
    assert len(table) == 2 * 4 * (L - 1)
    assert set(table["mixer"]) == {"attention"} and set(table["kind"]) == {"softmax_attention"}
    assert (table["tolerance_ess"] <= table["bound"]).all()
    assert (table["tolerance_ess"] <= table["tss"]).all()
    assert (table["entropy_ess"] <= table["bound"] + 1e-9).all()
    assert (table["bound"] == table["split"].clip(upper=L - table["split"])).all()
    words = text.split()
    first = table[(table.layer == 0) & (table.channel == 0)]
    assert [w.strip() for w in first["token"]] == words[:-1]  # token read before the split
    assert table.attrs["tol"] == 1e-3 and table.attrs["relative"] is False
    # The table agrees with the operators of the same layer.
    ops = handle.operators(text, 1)
    one = table[table.layer == 1].sort_values(["channel", "split"])
    expected = ops.tolerance_ess(1e-3).reshape(-1).numpy()
    assert (one["tolerance_ess"].to_numpy() == expected).all()
    # One layer, negative index, relative tolerance.
    last = handle.ess_table(text, layers=-1, tol=0.5, relative=True)
    assert set(last["layer"]) == {1} and last.attrs["relative"] is True
    assert isinstance(last, pd.DataFrame)
    cpu = handle.ess_table(text, layers=[1], device="cpu", dtype=torch.float64)
    assert cpu.equals(table[table.layer == 1].reset_index(drop=True))


def test_handle_keeps_attention_eager():
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS["llama"](), attn_implementation="sdpa")
    handle = adapters.load(model)
    assert model.config._attn_implementation == "eager"
    assert handle.operators(token_ids(8), 0).dense().shape == (4, 8, 8)


def word_tokenizer():
    """A word-level tokenizer trained in-process (ids < V)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = "the cat sat on mat and dog log a".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    vocab.update({"Ġ" + w: i + 1 + len(words) for i, w in enumerate(words)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
