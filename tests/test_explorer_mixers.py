"""The explorer on models whose blocks hold several mixers, or none (issue 8).

A tiny random Falcon-H1 (an SSD mixer and attention in every block) and NemotronH (with
an MLP-only block), built offline from configs, with a word-level tokenizer trained in
process. The shown spectra are held against the handle's own operators of each mixer.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

import ess_widgets
from ess_widgets.app import Explorer
from ess_widgets.app.sources import ModelSource

WORDS = "the cat sat on a mat and dog ran to park it was warm then slept . ,".split()
TEXT = "the cat sat on the mat . the dog ran to the park , and then it slept ."


def word_tokenizer() -> tf.PreTrainedTokenizerFast:
    vocab = {w: k for k, w in enumerate(["[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def tiny_handle(config):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    return ess_widgets.load(model, tokenizer=word_tokenizer())


@pytest.fixture(scope="module")
def falcon_h1():
    return tiny_handle(
        tf.FalconH1Config(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=64,
            max_position_embeddings=64,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_n_groups=2,
            mamba_d_state=6,
            mamba_chunk_size=8,
            mamba_expand=1,
        )
    )


def test_mixer_dropdown_shows_each_mixer_of_a_block(falcon_h1):
    handle = falcon_h1
    assert handle.mixers(0) == ["ssm", "attention"]
    ex = Explorer(model=handle, text=TEXT, layer=1).wait(300)
    assert ex.error == "", ex.error
    assert ex.mixer == "ssm" and ex._mixer_dropdown.layout.display is None
    assert [v for _, v in ex._mixer_dropdown.options] == ["ssm", "attention"]
    for mixer in ("ssm", "attention"):
        ex.mixer = mixer
        ex.wait(300)
        d = ex.layer_data()
        ops = handle.operators(TEXT, 1, mixer=mixer)
        assert d.mixer == mixer and d.family == ops.kind and d.complete
        S = ops.spectra().numpy()
        np.testing.assert_allclose(d.spectra[..., : S.shape[-1]], S, rtol=0, atol=1e-9 * S.max())
        assert f"({mixer})" in ex._summary.value
    ex.layer = 0  # the chosen mixer stays where the new block has it
    ex.wait(300)
    assert ex.mixer == "attention" and ex.layer_data().layer == 0
    ex._mixer_dropdown.value = "ssm"  # the control drives the trait
    ex.wait(300)
    assert ex.mixer == "ssm" and ex.layer_data().mixer == "ssm"
    ex.mixer = "conv"  # a mixer the block lacks: an error in the widget
    ex.wait(300)
    assert "`mixer` 'conv'" in ex.error
    ex.close()


def test_mlp_only_block_is_an_error_naming_the_layer():
    handle = tiny_handle(
        tf.NemotronHConfig(
            num_hidden_layers=4,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=64,
            max_position_embeddings=64,
            mamba_num_heads=4,
            mamba_head_dim=16,
            n_groups=2,
            ssm_state_size=6,
            chunk_size=8,
            hybrid_override_pattern="M-*M",  # SSD, MLP-only, attention, SSD
        )
    )
    (mlp,) = handle.mlp_only_layers
    ex = Explorer(model=handle, text=TEXT, layer=mlp).wait(300)
    assert f"Layer {mlp} has no sequence mixer" in ex.error
    ex.layer = 0
    ex.wait(300)
    assert ex.error == "" and ex.layer_data().complete
    ex.close()


def test_one_forward_pass_records_every_layer_when_they_fit(falcon_h1, monkeypatch):
    """Issue 9 item 4: the records of every layer come from one call (one pass when the
    budget allows) and are reused across layer and mixer switches; a budget too small for
    all of them together records one block at a time."""
    handle = falcon_h1
    calls = []
    original = handle.layer_operators

    def counted(inputs, layers=None, **kwargs):
        calls.append(layers)
        return original(inputs, layers=layers, **kwargs)

    monkeypatch.setattr(handle, "layer_operators", counted)
    source = ModelSource(handle, TEXT)
    for layer, mixer in ((1, "attention"), (0, "ssm"), (1, "ssm"), (0, "attention")):
        ops = handle.operators(TEXT, layer, mixer=mixer)
        got = source.layer(layer, mixer).spectra(range(ops.num_channels), [3, 9])
        np.testing.assert_array_equal(got, ops.spectra(splits=[3, 9]).numpy())
    assert calls == [None]
    prints = [spec.footprint(len(source.tokens)) for spec in handle.specs()]
    together = sum(f.capture for f in prints) + max(f.peak - f.capture for f in prints)
    monkeypatch.setattr(handle, "memory_budget", together - 1)
    calls.clear()
    source = ModelSource(handle, TEXT)
    for layer, mixer in ((1, "attention"), (1, "ssm"), (0, "ssm")):
        source.layer(layer, mixer)
    assert calls == [[1], [0]]
