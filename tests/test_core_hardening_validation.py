"""Regression tests for bugs found by a hostile probe of the core (each failed before its fix).

- entropy-ESS overflowed in float16 and lost huge or tiny float64 magnitudes;
- an empty batch of operators raised a third-party error from the causal check;
- a dense operator larger than the machine's memory was allocated instead of refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ess_widgets.core import _validation, entropy_ess, recurrence_operator, spectra, spectra_ref


def entropy_reference(row: list[float]) -> float:
    """exp(entropy) of one row by Python's math on exact ratios (no overflow possible)."""
    top = max(row)
    if top == 0:
        return 0.0
    scaled = [x / top for x in row]
    total = math.fsum(scaled)
    return math.exp(-math.fsum(p * math.log(p) for p in (x / total for x in scaled) if p > 0))


# --- bug 8: entropy-ESS in low precision and at extreme magnitudes ------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_entropy_ess_does_not_overflow_in_half_precision(dtype):
    s = torch.tensor([[6e4, 6e4], [6e4, 0.0], [3e4, 3e4]], dtype=dtype)
    ess = entropy_ess(s)
    assert ess.dtype == dtype
    assert ess.tolist() == [2.0, 1.0, 2.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_entropy_ess_low_precision_matches_float64(dtype):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(4, 9, 6, generator=g, dtype=torch.float64) * 6e4
    s = s.to(dtype)
    exact = entropy_ess(s.to(torch.float64))  # the same (rounded) values in float64
    rtol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(entropy_ess(s).to(torch.float64), exact, rtol=rtol, atol=0)


@pytest.mark.parametrize("magnitude", [1e-300, 1e-200, 1e-100, 1.0, 1e100, 1e300, 1e307])
def test_entropy_ess_at_extreme_magnitudes(magnitude):
    base = [3.0, 1.0, 1.0, 0.5, 0.0]
    s = torch.tensor([[magnitude * x for x in base]], dtype=torch.float64)
    expected = entropy_reference(base)
    torch.testing.assert_close(entropy_ess(s), torch.tensor([expected], dtype=torch.float64))
    equal = torch.full((1, 4), magnitude, dtype=torch.float64)
    torch.testing.assert_close(entropy_ess(equal), torch.tensor([4.0], dtype=torch.float64))


def test_entropy_ess_where_the_float64_sum_overflows():
    s = torch.full((1, 4), 1.5e308, dtype=torch.float64)  # the sum is 6e308 > max float64
    assert entropy_ess(s).tolist() == [4.0]


def test_entropy_ess_of_denormals_and_empty_rows():
    tiny = torch.tensor([[5e-324, 5e-324, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert entropy_ess(tiny).tolist() == [2.0, 0.0]
    assert entropy_ess(torch.zeros(2, 3, 0)).shape == (2, 3)
    assert (entropy_ess(torch.zeros(2, 3, 0)) == 0).all()


def test_entropy_ess_random_rows_match_python_math():
    rows = np.random.default_rng(1).exponential(size=(20, 7)) * np.logspace(-250, 250, 20)[:, None]
    got = entropy_ess(rows).tolist()
    for row, value in zip(rows.tolist(), got, strict=True):
        assert math.isclose(value, entropy_reference(row), rel_tol=1e-12)


# --- bug 9: empty batches, and operators too large for the machine ------------------------


@pytest.mark.parametrize("shape", [(0, 4, 4), (2, 0, 5, 5)])
def test_empty_batch_passes_validation_and_gives_empty_spectra(shape):
    T = torch.zeros(shape, dtype=torch.float64)
    assert _validation.check_operator(T).shape == shape
    assert _validation.check_operator(np.zeros(shape)).shape == shape
    L = shape[-1]
    expected = (*shape[:-2], L - 1, L // 2)
    for method in ("svd", "gram", "auto"):
        assert spectra(T, method=method).shape == expected
    assert spectra_ref(T).shape == expected
    assert entropy_ess(spectra(T)).shape == expected[:-1]


def test_empty_batch_is_still_checked_for_shape():
    with pytest.raises(ValueError, match="must be square"):
        _validation.check_operator(torch.zeros(0, 4, 5))
    with pytest.raises(ValueError, match="L >= 2"):
        _validation.check_operator(torch.zeros(0, 1, 1))


def test_physical_memory_is_read_from_sysconf():
    expected = os_memory()
    assert _validation.physical_memory() == expected
    assert expected is None or expected > 2**20


def os_memory():
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def test_physical_memory_is_none_without_sysconf(monkeypatch):
    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(_validation.os, "sysconf", no_sysconf)
    assert _validation.physical_memory() is None
    _validation.check_allocation(10**30, "anything", "nothing")  # cannot tell: no refusal


def test_check_allocation_names_the_bytes_and_the_fix(monkeypatch):
    monkeypatch.setattr(_validation, "physical_memory", lambda: 1000)
    _validation.check_allocation(1000, "exactly the memory", "fix it")  # fits
    with pytest.raises(ValueError) as err:
        _validation.check_allocation(1001, "one byte too many", "Do this instead.")
    message = str(err.value)
    assert message.startswith("one byte too many needs 1,001 bytes")
    assert "1,000 bytes" in message and message.endswith("Do this instead.")


def test_check_dense_size_counts_the_dense_bytes(monkeypatch):
    monkeypatch.setattr(_validation, "physical_memory", lambda: 3 * 5 * 5 * 8)
    _validation.check_dense_size((3,), 5, torch.float64, "fits")
    _validation.check_dense_size((2, 3), 5, torch.float32, "fits in float32")
    with pytest.raises(ValueError, match=r"shape \(4, 5, 5\) in torch.float64 needs 800 bytes"):
        _validation.check_dense_size((4,), 5, torch.float64, "too big")
    with pytest.raises(ValueError, match=r"shape \(7, 5, 5\) in torch.float32 needs 700 bytes"):
        _validation.check_dense_size((7,), 5, torch.float32, "too big")


def test_recurrence_operator_refuses_what_cannot_fit():
    # 4 channels at L = 10**6: T would need 32 TB; the inputs are 40 MB.
    L = 10**6
    a = torch.full((4, L, 1), 0.5, dtype=torch.float64)
    b = c = torch.ones(L, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"recurrence_operator.*32,000,000,000,000 bytes.*fewer"):
        recurrence_operator(a, b, c)


def test_recurrence_operator_checks_its_working_dtype(monkeypatch):
    a = torch.full((2, 10, 3), 0.5)
    b = c = torch.ones(10, 3)
    monkeypatch.setattr(_validation, "physical_memory", lambda: 2 * 10 * 10 * 4)
    assert recurrence_operator(a, b, c, dtype=torch.float32).shape == (2, 10, 10)
    with pytest.raises(ValueError, match="1,600 bytes"):
        recurrence_operator(a, b, c)  # float64 by default


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [3, 250, 2000])
def test_entropy_ess_of_k_equal_half_precision_values_is_exactly_k(dtype, k):
    # The work is float32: half-precision logs would miss k = 2000 by several units.
    s = torch.zeros(2, k + 5, dtype=dtype)
    s[0, :k] = 0.75
    s[1, :k] = 6e4
    assert entropy_ess(s).tolist() == [float(torch.tensor(k, dtype=dtype))] * 2


def test_check_operator_names_T_by_default():
    with pytest.raises(ValueError, match=r"^`T` must be square"):
        _validation.check_operator(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"^`weights` must be square"):
        _validation.check_operator(torch.ones(2, 3), "weights")


def test_causal_check_reads_the_first_superdiagonal_and_is_relative():
    T = torch.tril(torch.ones(5, 5, dtype=torch.float64))
    T[1, 2] = 0.5  # only the first superdiagonal
    with pytest.raises(ValueError, match="`T` is not causal"):
        _validation.check_operator(T)
    # Crumbs below 1e-6 of max |T| are accepted, however large T is.
    big = 1e3 * torch.tril(torch.ones(5, 5, dtype=torch.float64))
    big[0, 3] = 1e-4  # 1e-7 of max |T|
    assert _validation.check_operator(big) is big
    big[0, 3] = 2e-3  # 2e-6 of max |T|
    with pytest.raises(ValueError, match="not causal"):
        _validation.check_operator(big)
    # The zero operator is causal.
    zero = torch.zeros(3, 4, 4, dtype=torch.float64)
    assert _validation.check_operator(zero) is zero
    assert (spectra(zero) == 0).all()


def test_check_operator_reads_lists_and_names_bad_types():
    T = [[1.0, 0.0], [2, 3]]
    t = _validation.check_operator(T)
    assert t.dtype == torch.float64 and t.tolist() == [[1.0, 0.0], [2.0, 3.0]]
    assert spectra(T).tolist() == [[2.0]]
    with pytest.raises(TypeError, match=r"^`T` must be a torch.Tensor or numpy array, got str"):
        _validation.check_operator("abc")
    expected = entropy_ess(torch.tensor([[3.0, 1.0]], dtype=torch.float64))
    assert entropy_ess([[3.0, 1.0]]).tolist() == expected.tolist()


def test_entropy_ess_of_a_batch_is_per_row():
    # (heads, splits, K): every row on its own, against Python's math.
    s = np.random.default_rng(2).exponential(size=(3, 4, 5))
    s[1, 2] = 0.0
    got = entropy_ess(torch.from_numpy(s))
    assert got.shape == (3, 4)
    for index in np.ndindex(3, 4):
        assert math.isclose(float(got[index]), entropy_reference(s[index].tolist()), rel_tol=1e-12)
