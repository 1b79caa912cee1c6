"""Property-based tests (hypothesis): the structured path against the dense path.

``recurrence_spectra(a, b, c)`` must equal ``spectra(recurrence_operator(a, b, c))`` for
any recurrence: diagonal or dense transitions, shared (broadcast) vectors, float32 or
float64 inputs. Shapes stay small (L <= 12) so each example takes milliseconds.
Sequence lengths are always larger than the state size, so a diagonal ``a`` can never
be read as a dense one.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_widgets.core import (
    ess_bound,
    recurrence_operator,
    recurrence_spectra,
    spectra,
    tolerance_ess,
)

F64 = torch.float64


def assert_spectra_close(actual, expected, rtol, floor):
    """Relative error <= rtol on values >= floor * sigma_1 of their split; the rest small."""
    K = actual.shape[-1]
    assert (expected[..., K:] <= floor * expected[..., :1]).all()  # nothing lost past K
    e = expected[..., :K]
    sigma_1 = e[..., :1]
    big = e >= floor * sigma_1
    err = (actual - e).abs()
    assert (err[big] <= rtol * e[big]).all(), float((err[big] / e[big]).max())
    assert (err[~big] <= 2 * floor * sigma_1.expand_as(e)[~big]).all()


@st.composite
def recurrences(draw):
    """(a, b, c, transition): random stable recurrences with broadcast leading dims."""
    N = draw(st.integers(1, 4))
    L = draw(st.integers(N + 2, 12))
    transition = draw(st.sampled_from(["diagonal", "dense"]))
    dtype = draw(st.sampled_from([torch.float32, F64]))
    channels = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    # Each of a, b, c has the channel dimension, a size-1 one, or none (shared).
    lead = [draw(st.sampled_from([(channels,), (1,), ()])) for _ in range(3)]
    if transition == "diagonal":
        a = torch.rand(*lead[0], L, N, generator=g, dtype=F64) * 1.9 - 0.95
    else:
        a = torch.randn(*lead[0], L, N, N, generator=g, dtype=F64) * (0.9 / N**0.5)
    b = torch.randn(*lead[1], L, N, generator=g, dtype=F64)
    c = torch.randn(*lead[2], L, N, generator=g, dtype=F64)
    return a.to(dtype), b.to(dtype), c.to(dtype), transition


@settings(max_examples=40, deadline=None)
@given(recurrences())
def test_recurrence_spectra_equals_dense_spectra(case):
    a, b, c, transition = case
    L, N = b.shape[-2:]
    T = recurrence_operator(a, b, c)
    batch = torch.broadcast_shapes(
        a.shape[: a.ndim - (2 if transition == "diagonal" else 3)], b.shape[:-2], c.shape[:-2]
    )
    assert T.shape == (*batch, L, L)
    assert (torch.triu(T, 1) == 0).all()
    s = recurrence_spectra(a, b, c)
    assert s.shape == (*batch, L - 1, min(N, L // 2))
    assert s.dtype == F64  # float64 work by default, float32 input included
    dense = spectra(T)
    assert_spectra_close(s, dense, rtol=1e-7, floor=1e-6)
    # The rank of a split can never exceed the state size or the block size.
    bound = torch.minimum(ess_bound(L), torch.tensor(N))
    assert (tolerance_ess(s, 1e-9, relative=True) <= bound).all()
    assert (s[..., 1:] <= s[..., :-1]).all()  # sorted descending


@settings(max_examples=25, deadline=None)
@given(recurrences())
def test_recurrence_spectra_in_float32_work(case):
    a, b, c, _ = case
    s32 = recurrence_spectra(a, b, c, dtype=torch.float32)
    assert s32.dtype == torch.float32
    dense = spectra(recurrence_operator(a, b, c))
    assert_spectra_close(s32.double(), dense, rtol=1e-3, floor=1e-3)


@settings(max_examples=25, deadline=None)
@given(recurrences())
def test_each_channel_equals_its_own_recurrence(case):
    a, b, c, transition = case
    tail = 2 if transition == "diagonal" else 3
    batch = torch.broadcast_shapes(a.shape[: a.ndim - tail], b.shape[:-2], c.shape[:-2])
    s = recurrence_spectra(a, b, c)
    L, N = b.shape[-2:]
    a_full = a.expand(*batch, *a.shape[a.ndim - tail :])
    b_full, c_full = b.expand(*batch, L, N), c.expand(*batch, L, N)
    for index in range(batch.numel()):
        at = tuple(torch.unravel_index(torch.tensor(index), batch)) if batch else ()
        one = recurrence_spectra(a_full[at], b_full[at], c_full[at])
        torch.testing.assert_close(s[at], one, rtol=1e-9, atol=1e-12)
