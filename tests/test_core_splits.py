"""``splits=``: any subset of splits, the same numbers as the full computation.

Each requested row is compared with ``torch.equal`` (bit for bit) to the same
split's row of the full result, and with an independent numpy SVD of the block.
"""

import sys

import numpy as np
import pytest
import torch

import ess_widgets.core.recurrence as recurrence_module
from ess_widgets import (
    normalize_splits,
    recurrence_operator,
    recurrence_spectra,
    spectra,
    spectra_ref,
)
from ess_widgets.core import iter_spectra

F64 = torch.float64


def causal(shape, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.tril(torch.randn(*shape, generator=g, dtype=F64)).to(dtype)


def numpy_block_svd(T: torch.Tensor, i: int) -> np.ndarray:
    """Singular values of T[..., i:, :i] by numpy (LAPACK through another binding)."""
    return np.linalg.svd(T.double().numpy()[..., i:, :i], compute_uv=False)


# --- normalize_splits -------------------------------------------------------------------


@pytest.mark.parametrize(
    "splits, L, expected",
    [
        (None, 5, [1, 2, 3, 4]),
        (1, 5, [1, 2, 3, 4]),
        (3, 10, [1, 4, 7, 9]),  # every 3rd, then the last split
        (3, 8, [1, 4, 7]),  # the last split is already there: not repeated
        (100, 10, [1, 9]),
        (range(2, 9, 3), 10, [2, 5, 8]),
        (range(9, 0, -4), 10, [9, 5, 1]),
        (slice(None, None, 4), 10, [1, 5, 9]),  # a missing start is split 1
        (slice(-3, None), 10, [7, 8, 9]),
        (slice(None, None, -3), 10, [9, 6, 3]),
        ([5, 1, 5], 10, [5, 1, 5]),  # order kept, repeats allowed
        ((2,), 3, [2]),
        (np.array([3, 1], dtype=np.int32), 10, [3, 1]),
        (torch.tensor([4, 2]), 10, [4, 2]),
        (np.int64(2), 7, [1, 3, 5, 6]),
    ],
)
def test_normalize_splits_forms(splits, L, expected):
    got = normalize_splits(splits, L)
    assert got == expected
    assert all(type(i) is int for i in got)


@pytest.mark.parametrize(
    "splits, match",
    [
        ([0, 3], r"`splits` must lie in 1 \.\. L-1 = 1 \.\. 9.*got 0"),
        ([3, 10], r"got 10"),
        ([-1], r"got -1"),
        (range(0, 5), r"got 0"),
        (slice(0, 5), r"got 0"),
        (0, r"stride .* must be >= 1, got 0"),
        (-2, r"must be >= 1, got -2"),
        ([], r"`splits` is empty"),
        (range(3, 3), r"`splits` is empty"),
        (slice(5, 2), r"selects no split"),
        ([1.0, 2], r"must hold integers.*1\.0 of type float"),
        ([True], r"must hold integers.*True of type bool"),
        (True, r"must hold integers|`splits`"),
        (2.5, r"`splits` must be None, an int stride"),
        ("1,2", r"got a str"),
        (np.array([1.0, 2.0]), r"must hold integers, got an array of dtype float64"),
        (np.array([[1, 2]]), r"must be 1-D"),
    ],
)
def test_normalize_splits_rejects_bad_splits(splits, match):
    with pytest.raises(ValueError, match=match):
        normalize_splits(splits, 10)


@pytest.mark.parametrize("bad", [[0], 0, [], [1.5], [False]])
def test_spectra_and_recurrence_reject_bad_splits_naming_splits(bad):
    T = causal((6, 6), 0)
    with pytest.raises(ValueError, match="`splits`"):
        spectra(T, splits=bad)
    a = torch.full((6, 2), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="`splits`"):
        recurrence_spectra(a, torch.ones(6, 2), torch.ones(6, 2), splits=bad)


# --- spectra ----------------------------------------------------------------------------

SELECTIONS = [
    [7],
    [1],
    [15],
    [8, 9],
    [15, 3, 8, 3],
    4,
    range(2, 16, 5),
    slice(-4, None),
]


@pytest.mark.parametrize("method", ["svd", "gram"])
@pytest.mark.parametrize("splits", SELECTIONS, ids=str)
def test_spectra_splits_equal_full_rows_bit_for_bit(method, splits):
    T = causal((2, 3, 16, 16), 1)
    full = spectra(T, method=method)
    part = spectra(T, splits=splits, method=method)
    chosen = normalize_splits(splits, 16)
    assert part.shape == (2, 3, len(chosen), 8)
    assert torch.equal(part, full[..., [i - 1 for i in chosen], :])
    # and the values are the blocks' singular values, by an independent SVD
    for row, i in enumerate(chosen):
        expected = numpy_block_svd(T, i)
        np.testing.assert_allclose(part[..., row, : min(i, 16 - i)].numpy(), expected, rtol=1e-7)
        assert (part[..., row, min(i, 16 - i) :] == 0).all()


def test_spectra_splits_auto_gram_for_float32_input_bit_for_bit():
    T = causal((4, 33, 33), 2, dtype=torch.float32)
    full = spectra(T)  # float32 in, float64 work: the Gram path
    part = spectra(T, splits=range(1, 33, 8))
    assert part.dtype == F64
    assert torch.equal(part, full[:, [0, 8, 16, 24]])
    assert torch.equal(spectra(T, splits=8), full[:, [0, 8, 16, 24, 31]])


def test_spectra_odd_and_tiny_lengths():
    for L in (2, 3, 5):
        T = causal((L, L), L)
        for method in ("svd", "gram"):
            full = spectra(T, method=method)
            assert torch.equal(spectra(T, splits=[L - 1], method=method), full[[L - 2]])


def test_gram_work_grows_with_the_splits_asked(solves):
    # Not a timing: count the eigensolves and the sizes they see.
    seen = solves("eigvalsh")
    T = causal((40, 40), 3)
    spectra(T, method="gram", splits=[3, 20, 37, 3])
    assert sorted(shape[-1] for shape in seen) == [
        3,
        3,
        20,
    ]  # one solve per distinct split, of size min(i, L-i)
    seen.clear()
    spectra(T, method="gram")
    assert len(seen) == 39


# --- recurrence_spectra -----------------------------------------------------------------


def random_recurrence(transition, shape, seed):
    B, L, N = shape
    g = torch.Generator().manual_seed(seed)
    if transition == "diagonal":
        a = 0.5 + 0.5 * torch.rand(B, L, N, generator=g, dtype=F64)
    else:
        a = 0.9 * torch.randn(B, L, N, N, generator=g, dtype=F64) / N**0.5
    b = torch.randn(B, L, N, generator=g, dtype=F64)
    c = torch.randn(B, L, N, generator=g, dtype=F64)
    return a, b, c


@pytest.mark.parametrize("transition", ["diagonal", "dense"])
@pytest.mark.parametrize("splits", [[1], [29], [14, 2, 14], 6, slice(None, None, -7)], ids=str)
def test_recurrence_splits_equal_full_rows_bit_for_bit(transition, splits):
    a, b, c = random_recurrence(transition, (3, 30, 5), 4)
    full = recurrence_spectra(a, b, c, transition=transition)
    part = recurrence_spectra(a, b, c, splits=splits, transition=transition)
    chosen = normalize_splits(splits, 30)
    assert part.shape == (3, len(chosen), 5)
    assert torch.equal(part, full[:, [i - 1 for i in chosen]])
    T = recurrence_operator(a, b, c, transition=transition)
    dense = spectra(T, splits=splits)[..., :5]
    torch.testing.assert_close(part, dense, rtol=1e-8, atol=1e-10 * float(dense.amax()))


@pytest.mark.parametrize("transition", ["diagonal", "dense"])
def test_recurrence_checkpointed_sweep_gives_the_same_bits(monkeypatch, transition):
    # With no room for the forward factors, only checkpoints are kept and each
    # segment is recomputed: the same operations, so the same numbers.
    a, b, c = random_recurrence(transition, (2, 27, 4), 5)
    full = recurrence_spectra(a, b, c, transition=transition)
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 0)
    assert torch.equal(recurrence_spectra(a, b, c, transition=transition), full)
    chosen = [26, 1, 13, 6, 5]
    part = recurrence_spectra(a, b, c, splits=chosen, transition=transition)
    assert torch.equal(part, full[:, [i - 1 for i in chosen]])


def test_recurrence_svds_only_the_splits_asked(solves):
    calls = solves("svdvals")
    a, b, c = random_recurrence("diagonal", (1, 20, 3), 6)
    recurrence_spectra(a, b, c, splits=[4, 9, 4], device="cpu")
    assert len(calls) == 2  # one per distinct split (one chunk of channels here)


def test_spectra_ref_takes_the_same_splits():
    T = causal((2, 12, 12), 11)
    chosen = [11, 2, 6]
    ref = spectra_ref(T, splits=chosen)
    assert ref.shape == (2, 3, 6)
    for row, i in enumerate(chosen):
        m = min(i, 12 - i)
        np.testing.assert_allclose(ref[..., row, :m].numpy(), numpy_block_svd(T, i), rtol=1e-12)
    torch.testing.assert_close(ref, spectra(T, splits=chosen, method="svd"), rtol=1e-12, atol=0)


# --- iter_spectra -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["svd", "gram"])
@pytest.mark.parametrize("L", [2, 5, 16, 33])
def test_iter_spectra_rows_equal_spectra_bit_for_bit(method, L):
    T = causal((2, L, L), 20 + L)
    full = spectra(T, method=method)
    got = list(iter_spectra(T, method=method))
    assert sorted(i for i, _ in got) == list(range(1, L))  # each split once
    for i, row in got:
        assert row.shape == (2, L // 2)
        assert torch.equal(row, full[:, i - 1])


def test_iter_spectra_order_is_outwards_from_the_middle_alternating_sides():
    T = causal((12, 12), 21)
    order = [i for i, _ in iter_spectra(T, splits=[1, 11, 6, 7, 3, 9, 6])]
    # left of the middle (i <= 6) descending, right ascending, taken in turn
    assert order == [6, 7, 3, 9, 1, 11]


def test_iter_spectra_float32_auto_gram_and_any_subset():
    T = causal((3, 40, 40), 22, dtype=torch.float32)
    full = spectra(T)  # float32 input: the Gram path, float64 work
    chosen = [39, 2, 20, 21, 13]
    rows = dict(iter_spectra(T, splits=chosen))
    assert sorted(rows) == sorted(chosen)
    for i in chosen:
        assert rows[i].dtype == F64
        assert torch.equal(rows[i], full[:, i - 1])
        np.testing.assert_allclose(
            rows[i][:, : min(i, 40 - i)].numpy(), numpy_block_svd(T, i), rtol=1e-6, atol=1e-9
        )


def test_iter_spectra_tiny_and_huge_scales_stay_exact():
    # the power-of-two scaling is applied row by row: the same bits as spectra()
    T = causal((2, 20, 20), 23)
    for scale in (1e-200, 1e300):
        full = spectra(T * scale, method="gram")
        for i, row in iter_spectra(T * scale, method="gram", splits=[1, 10, 19]):
            assert torch.equal(row, full[:, i - 1])


def test_iter_spectra_stops_when_the_consumer_stops(solves):
    # Not a timing: count the eigensolves. A stopped stream computed at most the
    # splits consumed plus one batch ahead (one per worker thread).
    seen = solves("eigvalsh")
    T = causal((64, 64), 24)
    stream = iter_spectra(T, method="gram")
    taken = [next(stream)[0] for _ in range(3)]
    assert taken == [32, 33, 31]
    assert len(seen) <= 3 + max(torch.get_num_threads(), 1)
    stream.close()
    n = len(seen)
    assert list(iter_spectra(T, method="gram", splits=[5])) and len(seen) == n + 1


def test_iter_spectra_holds_no_thread_setting_between_rows():
    # the split workers set torch to one thread while they run; a suspended stream
    # must leave the process's setting as it found it
    threads = torch.get_num_threads()
    stream = iter_spectra(causal((30, 30), 25), method="gram")
    next(stream)
    assert torch.get_num_threads() == threads
    stream.close()


def test_iter_spectra_bad_input_raises_at_the_call():
    with pytest.raises(ValueError, match="`splits`"):
        iter_spectra(causal((6, 6), 0), splits=[0])
    with pytest.raises(ValueError, match="`method`"):
        iter_spectra(causal((6, 6), 0), method="qr")
    upper = torch.ones(5, 5, dtype=F64)
    with pytest.raises(ValueError, match="not causal"):
        iter_spectra(upper)


def test_iter_spectra_empty_batch():
    got = list(iter_spectra(torch.zeros(0, 6, 6, dtype=F64), splits=[4, 1]))
    assert [i for i, _ in got] == [1, 4]
    assert all(row.shape == (0, 3) for _, row in got)


@pytest.mark.parametrize("L", [17, 40, 64, 71])
def test_gram_rows_equal_full_rows_for_random_subsets(L):
    # every split sits somewhere between two chained Gram matrices: any subset, any L
    T = causal((2, L, L), 30 + L, dtype=torch.float32)
    full = spectra(T, method="gram")
    g = torch.Generator().manual_seed(L)
    for _ in range(4):
        chosen = torch.randperm(L - 1, generator=g)[: int(torch.randint(1, 9, (1,), generator=g))]
        chosen = [int(i) + 1 for i in chosen]
        part = spectra(T, method="gram", splits=chosen)
        assert torch.equal(part, full[:, [i - 1 for i in chosen]])


def test_a_stride_of_eight_asks_for_chained_gram_matrices_only():
    # Splits 1, 9, 17, ... and the middle ones are chained: none needs an extra
    # product (``block`` is None), so a stride of 8 costs its eigenvalues and the chain.
    spectra_module = sys.modules["ess_widgets.core.spectra"]
    for L in (64, 100, 512):
        t = torch.zeros(L, L, dtype=F64)
        wanted = set(range(1, L, 8)) | {L // 2, L // 2 + 1}
        items = list(spectra_module._gram_items(t, wanted))
        assert sorted(i for i, _, _ in items) == sorted(wanted)
        assert all(block is None for _, _, block in items)
