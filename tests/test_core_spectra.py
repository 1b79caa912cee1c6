"""``spectra``: the argument named in its errors, the overflow message, and the Gram path's
per-matrix scaling on a batch of very different magnitudes (against numpy's SVD)."""

import numpy as np
import pytest
import torch

from ess_widgets.core import spectra, spectra_ref

F64 = torch.float64


def test_every_method_and_spectra_ref_name_T_in_type_errors():
    for method in ("auto", "svd", "gram"):  # "auto" reads T's dtype first
        with pytest.raises(TypeError, match=r"^`T` must be a torch.Tensor or numpy array, got str"):
            spectra("not an operator", method=method)
    with pytest.raises(TypeError, match=r"^`T` must be a torch.Tensor or numpy array, got str"):
        spectra_ref("not an operator")


def test_singular_values_past_the_float_range_are_refused_with_the_fix():
    # All entries 1.5e308: the 3 x 1 block at split 1 has sigma = sqrt(3) * 1.5e308 = inf.
    T = torch.tril(torch.full((4, 4), 1.5e308, dtype=F64))
    with pytest.raises(
        ValueError,
        match=r"^The singular values of `T` are not finite in torch\.float64 \(\d+ of 6 values "
        r"overflow\)\. Rescale `T` \(ESS is scale-free\) or compute in float64\.$",
    ):
        spectra(T, method="svd")


def test_gram_path_scales_each_matrix_by_its_own_magnitude():
    # One matrix near 1, one near 1e-200, one near 1e200: one common scale would
    # underflow or overflow the squares of the others.
    g = torch.Generator().manual_seed(6)
    L = 12
    base = torch.tril(torch.randn(3, L, L, generator=g, dtype=F64))
    T = base * torch.tensor([1.0, 1e-200, 1e200], dtype=F64)[:, None, None]
    got = spectra(T, method="gram")
    for i in range(1, L):
        expected = np.linalg.svd(T[:, i:, :i].numpy(), compute_uv=False)
        m = min(i, L - i)
        sigma_1 = expected[:, :1]
        # the Gram path's accuracy: about sqrt(eps) sigma_1 per matrix
        assert (np.abs(got[:, i - 1, :m].numpy() - expected) <= 1e-7 * sigma_1).all()
        assert (got[:, i - 1, :1].numpy() > 0).all()


def test_auto_compares_the_inputs_precision_with_the_working_dtype():
    g = torch.Generator().manual_seed(7)
    T32 = torch.tril(torch.randn(2, 10, 10, generator=g))
    # float32 input, float32 work: no precision lost to the input, so the SVD path
    assert torch.equal(
        spectra(T32, dtype=torch.float32), spectra(T32, method="svd", dtype=torch.float32)
    )
    # float32 input, float64 work: the Gram path
    assert torch.equal(spectra(T32), spectra(T32, method="gram"))


def test_iter_spectra_rows_in_the_dtype_asked_for_batches_of_any_rank():
    from ess_widgets.core import iter_spectra

    g = torch.Generator().manual_seed(8)
    T = torch.tril(torch.randn(2, 3, 9, 9, generator=g, dtype=F64))
    full = spectra(T, dtype=torch.float32)
    rows = dict(iter_spectra(T, dtype=torch.float32))
    assert sorted(rows) == list(range(1, 9))
    for i, row in rows.items():
        assert row.dtype == torch.float32 and row.shape == (2, 3, 4)
        assert torch.equal(row, full[..., i - 1, :])


def test_iter_spectra_names_T_when_singular_values_overflow():
    from ess_widgets.core import iter_spectra

    T = torch.tril(torch.full((4, 4), 1.5e308, dtype=F64))
    with pytest.raises(ValueError, match=r"^The singular values of `T` are not finite"):
        list(iter_spectra(T, method="svd"))


@pytest.mark.parametrize("threads", [1, 2])
def test_iter_spectra_computes_one_batch_of_threads_splits_ahead(solves, threads):
    from ess_widgets.core import iter_spectra

    solves = solves("svdvals")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        T = torch.tril(torch.ones(12, 12, dtype=F64))
        rows = iter_spectra(T, method="svd")
        next(rows)
        assert len(solves) == threads  # nothing more before the consumer asks
        rows.close()
    finally:
        torch.set_num_threads(before)
    assert len(solves) == threads
