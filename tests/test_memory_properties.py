"""Property-based tests (hypothesis) of the memory search behind every "shorten to N tokens".

``max_length(need, budget, upper)`` must be the largest ``L`` in ``[2, upper]`` with
``need(L) <= budget`` (0 when none fits), for any ``need`` that grows with ``L``; and
``require`` must refuse exactly when ``need(L) > budget``, naming that largest length.
Both are checked against a plain scan over every length.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_widgets.adapters.memory import max_length, require


def scan(need, budget: int, upper: int) -> int:
    """The largest L in [2, upper] with need(L) <= budget, by trying every L."""
    best = 0
    for L in range(2, upper + 1):
        if need(L) <= budget:
            best = L
    return best


@st.composite
def growing_needs(draw):
    """need(L) = c2 L^2 + c1 L + c0, plus steps: non-decreasing, with flat stretches."""
    c2, c1, c0 = (draw(st.integers(0, 50)) for _ in range(3))
    steps = sorted(draw(st.lists(st.integers(2, 300), max_size=4)))
    jump = draw(st.integers(0, 10_000))

    def need(L: int) -> int:
        return c2 * L * L + c1 * L + c0 + jump * sum(1 for s in steps if L >= s)

    return need


@settings(max_examples=200, deadline=None)
@given(growing_needs(), st.integers(0, 2_000_000), st.integers(2, 300))
def test_max_length_is_the_largest_that_fits(need, budget, upper):
    fits = max_length(need, budget, upper)
    assert fits == scan(need, budget, upper)
    if fits:
        assert need(fits) <= budget
        assert fits == upper or need(fits + 1) > budget


@settings(max_examples=200, deadline=None)
@given(growing_needs(), st.integers(0, 2_000_000), st.integers(2, 300))
def test_require_refuses_exactly_when_over_budget_and_names_the_fit(need, budget, L):
    if need(L) <= budget:
        require("this layer", need, L, budget)  # no error
        return
    with pytest.raises(ValueError) as err:
        require("this layer", need, L, budget, remedy="or something else, ")
    message = str(err.value)
    assert message.startswith(f"this layer at L = {L} tokens needs about")
    fits = scan(need, budget, L)
    found = re.search(r"Shorten the input to at most (\d+) tokens", message)
    if fits >= 2:
        assert found and int(found.group(1)) == fits
    else:
        assert found is None and "Not even 2 tokens fit" in message
    assert "or something else, " in message
