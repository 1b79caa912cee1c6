"""Regression tests for the core bugs of the hardening issue (each failed before the fix).

- unstable recurrences returned all-NaN spectra silently;
- a dense A shared by channels was read as diagonal when C == L == N;
- the Gram path lost entries of 1e-200 and failed on 1e300;
- an empty batch and device="cuda" without CUDA raised third-party errors.
"""

import numpy as np
import pytest
import torch

from ess_widgets import recurrence_operator, recurrence_spectra, spectra, spectra_ref

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def block_svd(T, i):
    """numpy's SVD of T[..., i:, :i]: independent of the code under test."""
    return torch.from_numpy(np.linalg.svd(T.numpy()[..., i:, :i], compute_uv=False))


# --- unstable transitions ---------------------------------------------------------------


def test_unstable_diagonal_a_raises_naming_a_and_the_largest_value():
    L = 2000
    a = torch.full((L, 1), 1.5, dtype=F64)
    b = c = torch.ones(L, 1, dtype=F64)
    with pytest.raises(
        ValueError, match=r"`a` makes the recurrence unstable.*largest \|a\| is 1\.5"
    ):
        recurrence_spectra(a, b, c)


def test_unstable_dense_a_raises_naming_the_spectral_norm():
    L, N = 1100, 2
    a = 2.0 * torch.eye(N, dtype=F64).expand(L, N, N)
    b = c = torch.ones(L, N, dtype=F64)
    with pytest.raises(ValueError, match=r"`a` makes.*spectral norm \|\|A_t\|\|_2 is 2"):
        recurrence_spectra(a, b, c, transition="dense")


def test_overflow_in_float32_work_raises_too():
    L = 300  # 1.5**300 = 1e52: fine in float64, past float32's 3e38
    a = torch.full((L, 1), 1.5, dtype=F64)
    b = c = torch.ones(L, 1, dtype=F64)
    assert torch.isfinite(recurrence_spectra(a, b, c)).all()
    with pytest.raises(
        ValueError, match=r"unstable: its state grows past the range of torch\.float32"
    ):
        recurrence_spectra(a, b, c, dtype=torch.float32)


def test_growing_but_representable_recurrence_is_computed_not_refused():
    L = 40
    a = torch.full((L, 2), 1.2, dtype=F64)
    b = torch.randn(L, 2, generator=gen(0), dtype=F64)
    c = torch.randn(L, 2, generator=gen(1), dtype=F64)
    s = recurrence_spectra(a, b, c)
    T = recurrence_operator(a, b, c)
    for i in (1, 7, 20, 39):
        torch.testing.assert_close(
            s[i - 1, : min(i, L - i, 2)], block_svd(T, i)[:2], rtol=1e-9, atol=0
        )


def test_huge_inputs_of_a_stable_recurrence_blame_b_and_c():
    L = 20
    a = torch.full((L, 1), 0.5, dtype=F64)
    b = c = torch.full((L, 1), 1e200, dtype=F64)  # entries of T near 1e400
    with pytest.raises(
        ValueError, match=r"overflow torch\.float64 although `a` is stable.*max \|b\| = 1e\+200"
    ):
        recurrence_spectra(a, b, c)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_spectra_never_returns_inf(method):
    T = torch.tril(torch.full((16, 16), 1e308, dtype=F64))  # sigma_1 ~ 8e308: past float64
    with pytest.raises(ValueError, match=r"singular values of `T` are not finite"):
        spectra(T, method=method)


# --- transition= -----------------------------------------------------------------------


def shared_dense_case(C, L, N, seed=2):
    g = gen(seed)
    a = 0.9 * torch.randn(L, N, N, generator=g, dtype=F64) / N**0.5  # one A_t for all channels
    b = torch.randn(C, L, N, generator=g, dtype=F64)
    c = torch.randn(C, L, N, generator=g, dtype=F64)
    return a, b, c


def loop_operator(A_of, b, c):
    """T[t, j] = c_t^T A_t ... A_(j+1) b_j by explicit products (one channel)."""
    L, N = b.shape
    T = torch.zeros(L, L, dtype=F64)
    for j in range(L):
        prod = torch.eye(N, dtype=F64)
        for t in range(j, L):
            if t > j:
                prod = A_of(t) @ prod
            T[t, j] = c[t] @ prod @ b[j]
    return T


def test_shared_dense_a_with_c_equal_l_equal_n_asks_for_transition():
    a, b, c = shared_dense_case(4, 4, 4)
    with pytest.raises(
        ValueError,
        match=r"reads both as diagonal.*Pass transition='diagonal' or transition='dense'",
    ):
        recurrence_spectra(a, b, c)
    with pytest.raises(ValueError, match=r"transition="):
        recurrence_operator(a, b, c)


def test_shared_dense_a_with_c_equal_l_equal_n_both_readings():
    a, b, c = shared_dense_case(4, 4, 4)
    # dense: every channel uses the same A_t = a[t]
    T = recurrence_operator(a, b, c, transition="dense")
    for ch in range(4):
        torch.testing.assert_close(T[ch], loop_operator(lambda t: a[t], b[ch], c[ch]))
    s = recurrence_spectra(a, b, c, transition="dense")
    torch.testing.assert_close(s, spectra_ref(T)[..., :4], rtol=1e-9, atol=1e-12)
    # diagonal: a[ch] is channel ch's (L, N) sequence of diagonals
    T_diag = recurrence_operator(a, b, c, transition="diagonal")
    for ch in range(4):
        torch.testing.assert_close(
            T_diag[ch], loop_operator(lambda t, ch=ch: torch.diag(a[ch, t]), b[ch], c[ch])
        )
    s_diag = recurrence_spectra(a, b, c, transition="diagonal")
    torch.testing.assert_close(s_diag, spectra_ref(T_diag)[..., :4], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(s, s_diag)


def test_shared_dense_a_with_l_equal_n_but_other_c_is_dense():
    # Before: read as diagonal, then a misleading broadcast error.
    a, b, c = shared_dense_case(3, 4, 4)
    s = recurrence_spectra(a, b, c)
    torch.testing.assert_close(s, recurrence_spectra(a, b, c, transition="dense"))
    T = recurrence_operator(a, b, c)
    torch.testing.assert_close(T[1], loop_operator(lambda t: a[t], b[1], c[1]))


def test_transition_must_fit_the_shape_and_be_known():
    a, b, c = shared_dense_case(3, 5, 2)
    with pytest.raises(ValueError, match=r"`a` \(diagonal A_t\) must end in \(5, 2\)"):
        recurrence_spectra(a, b, c, transition="diagonal")
    with pytest.raises(ValueError, match=r"`transition` must be one of"):
        recurrence_spectra(a, b, c, transition="lowrank")
    with pytest.raises(ValueError, match=r"`a` \(dense A_t\) must end in \(5, 2, 2\)"):
        recurrence_spectra(a[..., 0], b, c, transition="dense")


# --- Gram scaling -----------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-200, 1e300, 1e-310])
def test_gram_path_scales_before_squaring(scale):
    T = torch.tril(torch.randn(2, 12, 12, generator=gen(3), dtype=F64)) * scale
    gram = spectra(T, method="gram")
    svd = spectra(T, method="svd")
    assert (gram > 0).sum() == (svd > 0).sum()
    sigma_1 = svd[..., :1]
    assert ((gram - svd).abs() <= 1e-7 * sigma_1).all()
    for i in (1, 6, 11):
        torch.testing.assert_close(
            svd[..., i - 1, : min(i, 12 - i)], block_svd(T, i), rtol=1e-12, atol=0
        )


# --- empty batches and devices ----------------------------------------------------------


def test_empty_batch_gives_an_empty_result():
    assert spectra(torch.zeros(0, 4, 4)).shape == (0, 3, 2)
    assert spectra(torch.zeros(2, 0, 5, 5), method="gram").shape == (2, 0, 4, 2)
    a = torch.zeros(0, 6, 3)
    assert recurrence_spectra(a, torch.ones(6, 3), torch.ones(6, 3)).shape == (0, 5, 3)
    assert recurrence_operator(a, torch.ones(6, 3), torch.ones(6, 3)).shape == (0, 6, 6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_cuda_without_cuda_is_a_value_error_naming_device():
    T = torch.tril(torch.ones(4, 4))
    with pytest.raises(
        ValueError, match=r"`device` = 'cuda' asks for CUDA, but CUDA is not available"
    ):
        spectra(T, device="cuda")
    a = b = c = torch.ones(4, 2)
    with pytest.raises(ValueError, match=r"`device`.*CUDA is not available"):
        recurrence_spectra(a, b, c, device="cuda")
    with pytest.raises(ValueError, match=r"`device`.*CUDA is not available"):
        spectra_ref(T, device="cuda:0")


def test_unknown_device_is_a_value_error_naming_device():
    with pytest.raises(ValueError, match=r"`device` must be a torch device"):
        spectra(torch.tril(torch.ones(4, 4)), device="gpu please")
