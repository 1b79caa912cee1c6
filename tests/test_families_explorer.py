"""Every model family of issue 8 opens in the Explorer, and shows the handle's numbers.

For each of the thirteen model types (tests/tiny_models.py: the tiny random float64
models of the adapter tests, built offline) with a word-level tokenizer trained in
process: ``ess_widgets.load(model, tokenizer=...)``, then ``Explorer(model=handle)`` on
the block's first sequence mixer that is not attention (the family's own mixer). The
shown tolerance-ESS (relative tolerance 1e-3), entropy-ESS and TSS curves of one channel
must equal the rows of the handle's ``ess_table`` for that layer, mixer and channel (an
independent path: the table computes all splits at once, the explorer chunk by chunk).
Where a block holds several mixers (Falcon-H1, Zamba2's hybrid blocks), the mixer
selector lists ``handle.mixers(layer)`` and switching it shows the other mixer's
operator family and numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import numpy as np
import pytest
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

import ess_widgets
from ess_widgets.app import Explorer

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny models (tiny_models.py)
from tiny_models import FAMILIES, V, tiny_model

TEXT = "the cat sat on the mat . the dog ran to the park , and then it slept ."
TOL = 1e-3  # relative: the tiny models' SSD, conv and mLSTM blocks are all below 1e-3
WAIT_S = 300  # a bound against hanging, not a timing


@pytest.fixture(scope="module")
def tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer trained on ``TEXT`` (16 tokens: 19 ids for ``TEXT``)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    assert len(tokenizer) <= V
    return tokenizer


def own_mixer(handle) -> tuple[int, str]:
    """The first (layer, mixer) whose mixer is not attention (the family's own kind),
    in a block with several mixers where the model has one."""
    layers = range(handle.num_layers)
    several = [k for k in layers if len(handle.mixers(k)) > 1]
    for layer in several or layers:
        for mixer in handle.mixers(layer):
            if mixer != "attention":
                return layer, mixer
    raise AssertionError(f"{handle.name}: no mixer other than attention")


def table_rows(table, mixer: str, channel: int):
    rows = table[(table["mixer"] == mixer) & (table["channel"] == channel)]
    return rows.sort_values("split")


def assert_shows_the_table(ex: Explorer, table, layer: int, mixer: str) -> None:
    """The explorer's view of ``layer``/``mixer``/``ex.head`` equals the table's rows."""
    assert ex.error == "", ex.error
    data = ex.layer_data()
    assert (data.layer, data.mixer) == (layer, mixer) and data.complete
    rows = table_rows(table, mixer, ex.head)
    assert len(rows) == data.length - 1 and rows["tolerance_ess"].max() >= 1
    assert data.family == rows["kind"].iloc[0]
    assert list(data.tokens) == list(table.attrs["tokens"])
    shown = ex.current()
    assert shown["complete"] and shown["shown_head"] == ex.head
    np.testing.assert_array_equal(shown["curve_tolerance"], rows["tolerance_ess"].to_numpy())
    np.testing.assert_allclose(
        shown["curve_entropy"], rows["entropy_ess"].to_numpy(), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_array_equal(shown["curve_tss"], rows["tss"].to_numpy())
    assert f"layer {layer}" in ex._summary.value


@pytest.mark.parametrize("family", FAMILIES)
def test_family_opens_in_the_explorer_with_the_tables_numbers(family, tokenizer):
    handle = ess_widgets.load(tiny_model(family), tokenizer=tokenizer)
    layer, mixer = own_mixer(handle)
    table = handle.ess_table(TEXT, layers=[layer], tol=TOL, relative=True, progress=False)
    assert set(table["mixer"]) == set(handle.mixers(layer))
    channels = handle.num_channels(layer, mixer)
    assert sorted(set(table.loc[table["mixer"] == mixer, "channel"])) == list(range(channels))
    head = min(1, channels - 1)  # not only channel 0: the channel index must match too
    ex = Explorer(
        model=handle, text=TEXT, layer=layer, mixer=mixer, head=head, tol=TOL, relative=True
    )
    try:
        ex.wait(WAIT_S)
        assert_shows_the_table(ex, table, layer, mixer)
        assert ex._layer_slider.max == handle.num_layers - 1
        mixers = handle.mixers(layer)
        assert [v for _, v in ex._mixer_dropdown.options] == mixers
        assert (ex._mixer_dropdown.layout.display is None) == (len(mixers) > 1)
        for other in (m for m in mixers if m != mixer):  # the selector switches the operator
            ex._mixer_dropdown.value = other
            ex.wait(WAIT_S)
            assert ex.mixer == other
            assert ex.layer_data().family != table_rows(table, mixer, 0)["kind"].iloc[0]
            assert_shows_the_table(ex, table, layer, other)
        assert ex.error == ""
    finally:
        ex.close()


def test_every_family_of_issue_8_is_covered():
    issue_8 = """qwen3_next olmo_hybrid kimi_linear bailing_hybrid minimax xlstm rwkv
    recurrent_gemma lfm2 lfm3 falcon_h1 nemotron_h zamba2""".split()
    assert FAMILIES == sorted(issue_8)
