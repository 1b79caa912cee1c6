"""Selective copying and compression: generators against plain loops and hand-checked cases."""

import pytest
import torch

from ess_widgets.tasks import (
    DELIMITER,
    FILLER,
    IGNORE_INDEX,
    compression,
    copy_tokens,
    format_copy,
    make_batch,
    parse_copy,
    selective_copying,
)


@pytest.mark.parametrize("n, L, V", [(1, 2, 3), (3, 9, 16), (8, 32, 16), (8, 64, 64)])
def test_selective_copying_against_a_plain_loop(n, L, V):
    b = selective_copying(32, num_tokens=n, seq_len=L, vocab_size=V, seed=4)
    assert b.inputs.shape == b.targets.shape == (32, L)
    assert b.inputs.dtype == b.targets.dtype == torch.long
    context = L - n
    for x, y in zip(b.inputs.tolist(), b.targets.tolist()):
        data = [t for t in x[:context] if t != FILLER]  # the non-noise tokens, in order
        assert len(data) == n == len(set(data))
        assert all(2 <= t < V for t in data)
        assert x[context] == DELIMITER
        assert x[context + 1 :] == data[:-1]  # teacher forcing
        assert y[:context] == [IGNORE_INDEX] * context  # targets only where defined
        assert y[context:] == data
    assert (b.query_mask.sum(1) == n).all()


def test_selective_copying_hand_checked_example():
    b = selective_copying(1, num_tokens=2, seq_len=5, vocab_size=4, seed=0)
    x, y = b.inputs[0].tolist(), b.targets[0].tolist()
    # the two data tokens are 2 and 3 (the only ones), in some order, among 1 noise slot.
    data = [t for t in x[:3] if t]
    assert sorted(data) == [2, 3] and x[3] == 1 and x[4] == data[0]
    assert y == [-100, -100, -100, data[0], data[1]]
    # and the text of a written-out case
    ids = parse_copy("_ d4 _ _ d2 d7 | d4 d2", 16)
    assert ids.tolist() == [0, 5, 0, 0, 3, 8, 1, 5, 3]


def test_compression_against_a_plain_loop():
    n, V = 5, 12
    b = compression(32, num_tokens=n, vocab_size=V, seed=1)
    assert b.inputs.shape == b.targets.shape == (32, 2 * n)
    for x, y in zip(b.inputs.tolist(), b.targets.tolist()):
        seq = x[: n - 1]
        assert all(2 <= t < V for t in seq)
        assert x[n - 1] == DELIMITER and x[n:] == [FILLER] * n
        assert y[: n - 1] == [IGNORE_INDEX] * (n - 1)
        assert y[n - 1 : 2 * n - 1] == [*seq, DELIMITER]
        assert y[2 * n - 1] == IGNORE_INDEX
    assert (b.query_mask.sum(1) == n).all()


def test_compression_hand_checked_example():
    b = compression(1, num_tokens=2, vocab_size=3, seed=0)
    # one data token, necessarily token 2 (= d1): "d1 | _ _" -> targets ". d1 | ."
    assert b.inputs.tolist() == [[2, 1, 0, 0]]
    assert b.targets.tolist() == [[-100, 2, 1, -100]]
    assert format_copy(b.inputs[0], 3) == "d1 | _ _"


def test_seeds_fix_the_data():
    kw = {"num_tokens": 4, "seq_len": 16, "vocab_size": 16}
    a, b, c = (selective_copying(8, seed=s, **kw) for s in (1, 1, 2))
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    a, b, c = (compression(8, num_tokens=4, vocab_size=16, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda: selective_copying(2, num_tokens=4, seq_len=7, vocab_size=16, seed=0),
            ValueError,
            "at least 8",
        ),
        (
            lambda: selective_copying(2, num_tokens=4, seq_len=8, vocab_size=5, seed=0),
            ValueError,
            "vocab_size >= 6",
        ),
        (
            lambda: selective_copying(2, num_tokens=1.5, seq_len=8, vocab_size=5, seed=0),
            TypeError,
            "num_tokens",
        ),
        (lambda: compression(2, num_tokens=1, vocab_size=16, seed=0), ValueError, "num_tokens"),
        (
            lambda: make_batch("compression", 2, num_items=4, seq_len=9, vocab_size=8, seed=0),
            ValueError,
            "2 \\* num_items = 8",
        ),
        (
            lambda: make_batch("copy", 2, num_items=4, seq_len=8, vocab_size=8, seed=0),
            ValueError,
            "task",
        ),
        (lambda: parse_copy("d1 x", 8), ValueError, "Unknown token 'x'"),
        (lambda: parse_copy("d7", 8), ValueError, "d1 .. d6"),
        (lambda: parse_copy("", 8), ValueError, "empty"),
        (lambda: copy_tokens([9], 8), ValueError, "outside"),
    ],
)
def test_bad_arguments_raise(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_text_round_trip():
    b = selective_copying(4, num_tokens=5, seq_len=20, vocab_size=32, seed=3)
    for x in b.inputs:
        assert torch.equal(parse_copy(format_copy(x, 32), 32), x)
    assert copy_tokens([0, 1, 2, 31], 32) == ("_", "|", "d1", "d30")


def test_make_batch_matches_the_generators():
    a = make_batch("selective_copying", 3, num_items=2, seq_len=8, vocab_size=8, seed=5)
    b = selective_copying(3, num_tokens=2, seq_len=8, vocab_size=8, seed=5)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    c = make_batch("compression", 3, num_items=3, seq_len=6, vocab_size=8, seed=5)
    assert torch.equal(c.inputs, compression(3, num_tokens=3, vocab_size=8, seed=5).inputs)
