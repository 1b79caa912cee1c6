"""The Gram path of ``spectra``: the chained Gram matrices against direct products, how
far the chains run, the power-of-two scaling, all held against numpy.
"""

import numpy as np
import pytest
import torch

from ess_widgets.core import spectra
from ess_widgets.core.spectra import (
    GRAM_STEP,
    _build_gram,
    _gram_items,
    _left_items,
    _right_items,
    times_pow2,
)

F64 = torch.float64


def causal(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.tril(torch.randn(*shape, generator=g, dtype=F64))


def direct_gram(T, i):
    """The smaller Gram matrix of the block T[..., i:, :i], by numpy."""
    H = T[..., i:, :i].numpy()
    L = T.shape[-1]
    return H.swapaxes(-1, -2) @ H if i <= L - i else H @ H.swapaxes(-1, -2)


@pytest.mark.parametrize("L", [2, 3, 9, 17, 18, 26, 40])
def test_every_chained_gram_matrix_is_the_blocks_own(L):
    T = causal((2, 1, L, L), L)
    items = [_build_gram(item) for item in _gram_items(T)]  # all splits by default
    assert sorted(i for i, _ in items) == list(range(1, L))
    for i, gram in items:
        m = min(i, L - i)
        assert gram.shape == (2, 1, m, m)
        expected = direct_gram(T, i)
        np.testing.assert_allclose(gram.numpy(), expected, rtol=1e-12, atol=1e-12 * L)


class Reads:
    """A tensor that records which blocks are read from it."""

    def __init__(self, t):
        self.t, self.shape, self.count = t, t.shape, 0

    def __getitem__(self, key):
        self.count += 1
        return self.t[key]


# L = 40: the middle splits are 20 (left) and 21 (right); the chains go on through the
# anchors 1 + 8k (17, 9, 1 below; 25, 33 above); a split between anchors is built from
# the chained matrix next to it nearer the middle, with one more block read.
@pytest.mark.parametrize(
    ("wanted", "left_reads", "right_reads"),
    [
        ({20}, 1, 0),  # the middle split: its own block, no chain step, no right side
        ({21}, 0, 1),  # the first split right of the middle
        ({17}, 2, 0),  # one chain step down, to the anchor 17
        ({25}, 0, 2),  # one chain step up, to the anchor 25
        ({12}, 3, 0),  # down to 17, then 12 from it
        ({37}, 0, 4),  # up to 25 and 33, then 37 from it
        ({13, 21}, 3, 1),
        ({4, 39}, 4, 4),
    ],
)
def test_chains_run_only_as_far_as_the_furthest_split_asked(wanted, left_reads, right_reads):
    T = causal((40, 40), 1)
    half = 20
    for side, expected_reads, mine in (
        (_left_items, left_reads, {i for i in wanted if i <= half}),
        (_right_items, right_reads, {i for i in wanted if i > half}),
    ):
        reads = Reads(T)
        got = dict(_build_gram(item) for item in side(reads, wanted))
        assert set(got) == mine
        assert reads.count == expected_reads, side.__name__
        for i, gram in got.items():
            np.testing.assert_allclose(gram.numpy(), direct_gram(T, i), rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("L", [18, 19, 26, 34, 35])
def test_gram_path_singular_values_against_numpy_for_chain_ends(L):
    # The chain points: the middle splits and the anchors 1 + k GRAM_STEP, each reached
    # by the last step of a chain when it is the furthest split asked; ask for each alone
    # and for all splits together.
    T = causal((3, L, L), 100 + L)
    half = L // 2
    ends = sorted({half, half + 1} | {i for i in range(1, L) if (i - 1) % GRAM_STEP == 0})
    assert ends
    for splits in [[i] for i in ends] + [None]:
        got = spectra(T, method="gram", splits=splits)
        chosen = range(1, L) if splits is None else splits
        for row, i in enumerate(chosen):
            expected = np.linalg.svd(T[..., i:, :i].numpy(), compute_uv=False)
            m = min(i, L - i)
            np.testing.assert_allclose(
                got[..., row, :m].numpy(), expected, rtol=0, atol=1e-7 * float(expected.max())
            )


@pytest.mark.parametrize("exponent", [-1074, -1073, -600, -3, 0, 5, 1000, 1023])
def test_times_pow2_is_exact_across_the_float64_range(exponent):
    x = torch.tensor([1.0, 0.75, 1.5, 0.5], dtype=F64)
    got = times_pow2(x, torch.tensor(exponent))
    # numpy's ldexp is exact, with one rounding into the subnormals.
    expected = np.ldexp(x.numpy(), exponent)
    assert np.array_equal(got.numpy(), expected)
    assert got.dtype == F64


def test_times_pow2_per_matrix_exponents_broadcast():
    x = torch.ones(3, 2, 2, dtype=F64)
    e = torch.tensor([-1060, 0, 1020])
    got = times_pow2(x, e[:, None, None])
    for k in range(3):
        assert (got[k] == np.ldexp(1.0, int(e[k]))).all()
