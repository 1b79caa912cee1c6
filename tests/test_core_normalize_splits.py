"""``normalize_splits`` with slices of an explicit step, against ``range(L)[slice]``."""

import pytest

from ess_widgets.core import normalize_splits


@pytest.mark.parametrize(
    ("splits", "expected"),
    [
        (slice(None, None, 1), list(range(1, 10))),  # a missing start is split 1 forwards
        (slice(None, 5, 1), [1, 2, 3, 4]),
        (slice(None, None, 2), [1, 3, 5, 7, 9]),
        (slice(3, None, 1), list(range(3, 10))),
        (slice(None, None, -1), list(range(9, 0, -1))),  # a missing stop is split 1 backwards
        (slice(None, 4, -2), [9, 7, 5]),
    ],
    ids=str,
)
def test_slices_with_a_step(splits, expected):
    assert normalize_splits(splits, 10) == expected


def test_bad_slices_and_empty_selections_say_so():
    with pytest.raises(ValueError, match=r"^`splits` is not a valid slice of split indices: "):
        normalize_splits(slice(None, None, 0), 10)
    with pytest.raises(ValueError, match=r"^`splits` is not a valid slice of split indices: "):
        normalize_splits(slice(0.5, 3), 10)
    with pytest.raises(ValueError, match=r"^`splits` is empty: ask for at least one split"):
        normalize_splits([], 10)


def test_a_length_without_splits():
    for L in (1, 0):
        with pytest.raises(ValueError, match=rf"^A sequence of length L = {L} has no split"):
            normalize_splits(None, L)
