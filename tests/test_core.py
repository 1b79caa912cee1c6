"""Core math: split spectra (dense and structured) and the ESS measures."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_widgets import (
    entropy_ess,
    ess_bound,
    recurrence_operator,
    recurrence_spectra,
    spectra,
    spectra_ref,
    tolerance_ess,
)

F64 = torch.float64


def random_lti(n, seed):
    """A generic stable LTI system (A, B, C) with state n."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=F64)
    A = 0.9 * A / torch.linalg.eigvals(A).abs().max()
    return A, torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)


def lti_operator(A, B, C, L):
    """T[i, j] = C A^(i-j-1) B for i > j (docs/definitions.md, TSS per family), built by powers."""
    markov = [C @ torch.linalg.matrix_power(A, k) @ B for k in range(L - 1)]
    T = torch.zeros(L, L, dtype=F64)
    for i in range(L):
        for j in range(i):
            T[i, j] = markov[i - j - 1]
    return T


def assert_spectra_close(actual, expected, rtol=1e-8, floor=1e-6):
    """Relative error <= rtol on values >= floor * sigma_1; the rest below the floor."""
    K = min(actual.shape[-1], expected.shape[-1])
    a, e = actual[..., :K], expected[..., :K]
    sigma_1 = expected[..., :1].amax()
    big = e >= floor * sigma_1
    rel = ((a - e).abs() / e.clamp_min(1e-300))[big]
    assert rel.max() <= rtol, f"largest relative error {rel.max():.3g} > {rtol}"
    assert (a[~big] <= 2 * floor * sigma_1).all()
    assert (actual[..., K:] <= floor * sigma_1).all()
    assert (expected[..., K:] <= floor * sigma_1).all()


# --- shapes and the dense paths ----------------------------------------------------------


def numpy_split_spectra(T: np.ndarray) -> np.ndarray:
    """Singular values of every block T[i:, :i], one numpy (LAPACK gesdd) SVD per block.

    Independent of torch: numpy's own SVD of each (L-i) x i block, matrix by matrix.
    """
    L = T.shape[-1]
    lead = T.shape[:-2]
    out = np.zeros((*lead, L - 1, L // 2))
    for index in np.ndindex(*lead):
        for i in range(1, L):
            sv = np.linalg.svd(T[index][i:, :i], compute_uv=False)
            out[(*index, i - 1, slice(0, min(i, L - i)))] = sv
    return out


@pytest.mark.parametrize("L", [2, 3, 4, 9, 16])
@pytest.mark.parametrize("method", ["svd", "gram", "ref"])
def test_spectra_matches_plain_svd_per_split(L, method):
    g = torch.Generator().manual_seed(L)
    T = torch.tril(torch.randn(2, 3, L, L, generator=g, dtype=F64))
    out = spectra_ref(T) if method == "ref" else spectra(T, method=method)
    assert out.shape == (2, 3, L - 1, L // 2)
    expected = numpy_split_spectra(T.numpy())
    # The Gram path squares the block: its absolute error is about sqrt(eps) sigma_1.
    atol = 1e-7 if method == "gram" else 1e-12
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=atol)
    for i in range(1, L):
        assert (out[..., i - 1, min(i, L - i) :] == 0).all()  # exact zero padding
    # the order within a row: descending
    assert (out[..., 1:] <= out[..., :-1]).all()


def test_running_sum_has_one_state_and_known_singular_value():
    # T = tril(ones): every block is an all-ones (L-i) x i matrix, sigma_1 = sqrt(i (L-i)).
    L = 10
    s = spectra(torch.tril(torch.ones(L, L, dtype=F64)))
    i = torch.arange(1, L, dtype=F64)
    torch.testing.assert_close(s[:, 0], torch.sqrt(i * (L - i)))
    assert (s[:, 1:] < 1e-12).all()
    assert (tolerance_ess(s, 1e-9) == 1).all()


def test_gram_path_of_float32_input_is_within_1e6_of_sigma1():
    g = torch.Generator().manual_seed(0)
    L = 64
    scores = torch.randn(4, L, L, generator=g)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    T = torch.softmax(scores.masked_fill(mask, float("-inf")), -1)  # float32 attention
    fast = spectra(T)  # auto -> gram for float32 input
    exact = spectra_ref(T)
    assert fast.dtype == F64
    assert (fast - exact).abs().max() <= 1e-6 * exact[..., 0].amax()


def test_numpy_input_and_dtype_override():
    T = np.tril(np.random.default_rng(0).standard_normal((6, 6)))
    s64 = spectra(T)
    s32 = spectra(T, dtype=torch.float32)
    assert isinstance(s64, torch.Tensor) and s64.dtype == F64
    assert s32.dtype == torch.float32
    np.testing.assert_allclose(s32.numpy(), s64.numpy(), rtol=1e-5, atol=1e-6)


# --- the known answers -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_lti_tolerance_ess_is_min_of_state_and_bound(n):
    L = 24
    A, B, C = random_lti(n, seed=n)
    s = spectra(lti_operator(A, B, C, L))
    ess = tolerance_ess(s, 1e-9, relative=True)
    expected = torch.minimum(ess_bound(L), torch.tensor(n))
    torch.testing.assert_close(ess, expected)


def test_lti_structured_path_through_augmented_state():
    # x_t = A x_(t-1) + B u_(t-1) as z_t = (x_t, u_t): the core's recurrence form.
    n, L = 4, 30
    A, B, C = random_lti(n, seed=11)
    A_aug = torch.zeros(n + 1, n + 1, dtype=F64)
    A_aug[:n, :n], A_aug[:n, n] = A, B
    b = torch.zeros(n + 1, dtype=F64)
    b[n] = 1.0
    c = torch.cat([C, torch.zeros(1, dtype=F64)])
    a_seq, b_seq, c_seq = A_aug.expand(L, -1, -1), b.expand(L, -1), c.expand(L, -1)
    T = lti_operator(A, B, C, L)
    torch.testing.assert_close(recurrence_operator(a_seq, b_seq, c_seq), T)
    s = recurrence_spectra(a_seq, b_seq, c_seq)
    assert_spectra_close(s, spectra(T))
    ess = tolerance_ess(s, 1e-9, relative=True)
    torch.testing.assert_close(ess, torch.minimum(ess_bound(L), torch.tensor(n)))


# --- structured path against the dense path -----------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(1, 16, 2), (3, 40, 5), (2, 33, 8), (1, 12, 9)],
    ids=lambda s: "B{}-L{}-N{}".format(*s),
)
@pytest.mark.parametrize("transition", ["diagonal", "dense"])
def test_recurrence_spectra_equals_spectra_of_materialized_operator(shape, transition):
    B, L, N = shape
    g = torch.Generator().manual_seed(B * 100 + L + N)
    if transition == "diagonal":
        a = 0.5 + 0.5 * torch.rand(B, L, N, generator=g, dtype=F64)
    else:
        a = 0.9 * torch.randn(B, L, N, N, generator=g, dtype=F64) / N**0.5
    b = torch.randn(B, L, N, generator=g, dtype=F64)
    c = torch.randn(B, L, N, generator=g, dtype=F64)
    T = recurrence_operator(a, b, c)
    # the recurrence's own definition, element by element
    t, j = L - 1, 2
    prod = torch.eye(N, dtype=F64).expand(B, N, N)
    for step in range(j + 1, t + 1):
        A_step = torch.diag_embed(a[:, step]) if transition == "diagonal" else a[:, step]
        prod = A_step @ prod  # A_t ... A_(j+1)
    expected = (c[:, t, None, :] @ prod @ b[:, j, :, None]).squeeze()
    torch.testing.assert_close(T[:, t, j], expected.reshape(B))
    assert (torch.triu(T, 1) == 0).all()

    s = recurrence_spectra(a, b, c)
    assert s.shape == (B, L - 1, min(N, L // 2))
    assert_spectra_close(s, spectra_ref(T))


def test_recurrence_spectra_broadcasts_shared_vectors():
    L, N, D = 20, 3, 4
    g = torch.Generator().manual_seed(5)
    a = torch.rand(D, L, N, generator=g, dtype=F64)
    b = torch.randn(L, N, generator=g, dtype=F64)  # shared by all channels
    c = torch.randn(1, L, N, generator=g, dtype=F64)
    s = recurrence_spectra(a, b, c)
    assert s.shape == (D, L - 1, N)
    for d in range(D):
        assert_spectra_close(s[d], recurrence_spectra(a[d], b, c[0]))


def test_recurrence_spectra_zero_past_rank_cap():
    L, N = 10, 6
    a = torch.full((L, N), 0.9, dtype=F64)
    b = torch.randn(L, N, dtype=F64, generator=torch.Generator().manual_seed(1))
    c = torch.randn(L, N, dtype=F64, generator=torch.Generator().manual_seed(2))
    s = recurrence_spectra(a, b, c)
    cap = ess_bound(L)
    for i in range(L - 1):
        assert (s[i, cap[i] :] == 0).all()


# --- the measures ------------------------------------------------------------------------


def test_tolerance_ess_counts_strictly_above_absolute_and_relative():
    s = torch.tensor([[4.0, 2.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.25]], dtype=F64)
    assert tolerance_ess(s, 1.0).tolist() == [2, 0]
    assert tolerance_ess(s, 0.0).tolist() == [3, 4]
    assert tolerance_ess(s, 0.3, relative=True).tolist() == [2, 3]
    assert tolerance_ess(torch.zeros(2, 3), 0.1, relative=True).tolist() == [0, 0]


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_entropy_ess_of_k_equal_values_is_k(k):
    s = torch.zeros(1, 20, dtype=F64)
    s[0, :k] = 3.7
    torch.testing.assert_close(entropy_ess(s), torch.tensor([float(k)], dtype=F64))


def test_entropy_ess_known_value_and_zero_block():
    s = torch.tensor([[3.0, 1.0], [0.0, 0.0]], dtype=F64)
    p = np.array([0.75, 0.25])
    expected = np.exp(-(p * np.log(p)).sum())
    torch.testing.assert_close(entropy_ess(s), torch.tensor([expected, 0.0], dtype=F64))


def test_ess_bound_values():
    assert ess_bound(2).tolist() == [1]
    assert ess_bound(7).tolist() == [1, 2, 3, 3, 2, 1]


causal_matrices = st.integers(min_value=2, max_value=14).flatmap(
    lambda L: st.tuples(st.just(L), st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 4, L]))
)


@settings(max_examples=40, deadline=None)
@given(causal_matrices, st.floats(1e-3, 1e3))
def test_invariants_on_random_low_rank_operators(params, scale):
    L, seed, rank = params
    g = torch.Generator().manual_seed(seed)
    T = torch.tril(
        torch.randn(L, rank, generator=g, dtype=F64) @ torch.randn(rank, L, generator=g, dtype=F64)
    )
    s = spectra(T)
    bound = ess_bound(L)
    tols = [0.0, 1e-9, 1e-3, 1e-1, 1.0, 10.0]
    counts = [tolerance_ess(s, t, relative=True) for t in tols]
    for looser, tighter in itertools.pairwise(counts):
        assert (tighter <= looser).all()  # non-increasing in tol
    assert (counts[0] <= bound).all()
    ent = entropy_ess(s)
    assert (ent <= bound.to(F64) + 1e-9).all()
    rank_i = tolerance_ess(s, 1e-10, relative=True)
    nonzero = rank_i > 0
    assert (ent[nonzero] >= 1 - 1e-9).all()
    assert (ent[nonzero] <= rank_i[nonzero].to(F64) + 1e-9).all()
    assert (ent[~nonzero] == 0).all()
    # scale invariance of entropy-ESS and of relative tolerance-ESS
    s_scaled = spectra(scale * T)
    torch.testing.assert_close(entropy_ess(s_scaled), ent, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        tolerance_ess(s_scaled, 1e-3, relative=True), tolerance_ess(s, 1e-3, relative=True)
    )


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "T, match",
    [
        (torch.ones(5), r"`T` must have at least 2 dimensions"),
        (torch.zeros(3, 4), r"`T` must be square.*3 rows and 4 columns"),
        (torch.zeros(1, 1), r"L >= 2.*L = 1"),
        (torch.tril(torch.full((4, 4), float("nan"))), r"`T` contains .*NaN"),
        (torch.tril(torch.full((4, 4), float("inf"))), r"`T` contains .*Inf"),
        (torch.triu(torch.ones(4, 4)), r"`T` is not causal.*check_causal=False"),
    ],
    ids=["1d", "non-square", "L1", "nan", "inf", "non-causal"],
)
def test_spectra_rejects_bad_operators(T, match):
    with pytest.raises(ValueError, match=match):
        spectra(T)


def test_non_causal_opt_out_uses_the_lower_part():
    T = torch.randn(6, 6, dtype=F64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(spectra(T, check_causal=False), spectra(torch.tril(T)))


def test_spectra_rejects_wrong_types_and_methods():
    with pytest.raises(TypeError, match=r"`T` must be a torch\.Tensor or numpy array"):
        spectra("not a matrix")
    with pytest.raises(ValueError, match="`method` must be one of"):
        spectra(torch.eye(3), method="qr")


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((5, 3), (5, 3), (5, 4)), r"`c` must have shape \(\.\.\., L, N\) = \(\.\.\., 5, 3\)"),
        (((5, 3), (5, 3), (6, 3)), r"`c` must have shape"),
        (((5, 4), (5, 3), (5, 3)), r"`a` \(diagonal A_t\) must end in \(5, 3\)"),
        (((5, 3, 2), (5, 3), (5, 3)), r"`a` \(dense A_t\) must end in \(5, 3, 3\)"),
        (((5,), (5, 3), (5, 3)), r"`a` must have shape \(\.\.\., L, N\)"),
        (((5, 3), (3,), (3,)), r"`b` must have shape \(\.\.\., L, N\)"),
        (((1, 3), (1, 3), (1, 3)), r"L >= 2"),
        (((2, 5, 3), (3, 5, 3), (5, 3)), r"do not broadcast"),
    ],
    ids=["c-N", "c-L", "a-diag", "a-dense", "a-ndim", "b-ndim", "L1", "batch"],
)
def test_recurrence_spectra_rejects_disagreeing_shapes(shapes, match):
    a, b, c = (torch.rand(*s, dtype=F64) for s in shapes)
    with pytest.raises(ValueError, match=match):
        recurrence_spectra(a, b, c)


def test_recurrence_spectra_rejects_nan():
    b = torch.ones(4, 2, dtype=F64)
    b[2, 1] = float("nan")
    with pytest.raises(ValueError, match="`b` contains 1 NaN"):
        recurrence_spectra(torch.ones(4, 2), b, torch.ones(4, 2))


@pytest.mark.parametrize("tol", [-1e-3, float("nan"), float("inf")])
def test_tolerance_must_be_non_negative_and_finite(tol):
    with pytest.raises(ValueError, match="`tol` must be a finite number >= 0"):
        tolerance_ess(torch.ones(3, 2), tol)


def test_measures_reject_bad_spectra():
    with pytest.raises(ValueError, match=r"`spectra` must have shape \(\.\.\., L-1, K\)"):
        entropy_ess(torch.ones(3))
    with pytest.raises(ValueError, match="negative values"):
        tolerance_ess(-torch.ones(3, 2), 0.1)
    with pytest.raises(ValueError, match="`L` must be at least 2"):
        ess_bound(1)
    with pytest.raises(TypeError, match="`L` must be an int, got float"):
        ess_bound(3.5)
