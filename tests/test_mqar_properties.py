"""Property-based tests (hypothesis) of the MQAR text format and the ``mqar`` generator.

The generator is checked against a plain reading of its convention (module docstring
of ``ess_widgets.tasks.mqar``): pairs first, distinct keys, each query holds a key of
the sequence and its target is the value paired with that key, filler elsewhere.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_widgets.tasks import FILLER, IGNORE_INDEX, format_mqar, mqar, mqar_vocab, parse_mqar
from ess_widgets.tasks.mqar_text import mqar_tokens

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def vocab_and_ids(draw):
    V = draw(st.integers(5, 300))
    ids = draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=60))
    return V, ids


@SETTINGS
@given(vocab_and_ids())
def test_format_then_parse_gives_the_ids_back(case):
    V, ids = case
    text = format_mqar(ids, V)
    assert parse_mqar(text, V).tolist() == ids
    assert format_mqar(parse_mqar(text, V), V) == text  # a fixed point
    # every label is one token, and a key is a query exactly when it appeared before
    labels = mqar_tokens(ids, V)
    keys, _ = mqar_vocab(V)
    for n, (i, label) in enumerate(zip(ids, labels)):
        assert label.startswith("q:") == (i in keys and i in ids[:n])


@SETTINGS
@given(vocab_and_ids(), st.sampled_from([" ", "  ", ", ", ",", "\t"]))
def test_separators_and_raw_ids_parse_alike(case, sep):
    V, ids = case
    raw = sep.join(str(i) for i in ids)
    assert parse_mqar(raw, V).tolist() == ids


@SETTINGS
@given(st.integers(5, 100), st.integers(1, 10**6))
def test_numbers_outside_the_vocabulary_are_refused(V, extra):
    keys, values = mqar_vocab(V)
    for token in (f"k{len(keys) + extra}", f"v{len(values) + extra}", f"{V - 1 + extra}"):
        with pytest.raises(ValueError, match="position 0"):
            parse_mqar(token, V)


@st.composite
def tasks(draw):
    kv = draw(st.integers(1, 8))
    V = draw(st.integers(max(5, 2 * kv + 1), 2 * kv + 40))
    nq = draw(st.integers(1, kv))
    L = draw(st.integers(2 * kv + nq, 2 * kv + nq + 20))
    B = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(num_examples=B, num_pairs=kv, seq_len=L, vocab_size=V, seed=seed, num_queries=nq)


@SETTINGS
@given(tasks())
def test_mqar_follows_its_convention(task):
    batch = mqar(**task)
    B, kv, L, V = task["num_examples"], task["num_pairs"], task["seq_len"], task["vocab_size"]
    keys, values = mqar_vocab(V)
    assert batch.inputs.shape == batch.targets.shape == (B, L)
    for row, target in zip(batch.inputs.tolist(), batch.targets.tolist()):
        pair_keys, pair_values = row[0 : 2 * kv : 2], row[1 : 2 * kv : 2]
        assert len(set(pair_keys)) == kv and all(k in keys for k in pair_keys)
        assert all(v in values for v in pair_values)
        value_of = dict(zip(pair_keys, pair_values))
        queried = []
        for t in range(2 * kv, L):
            if target[t] == IGNORE_INDEX:
                assert row[t] == FILLER
            else:
                assert row[t] in value_of and target[t] == value_of[row[t]]
                queried.append(row[t])
        assert all(target[t] == IGNORE_INDEX for t in range(2 * kv))
        assert len(queried) == task["num_queries"] == len(set(queried))
    again = mqar(**task)
    assert torch.equal(again.inputs, batch.inputs) and torch.equal(again.targets, batch.targets)
