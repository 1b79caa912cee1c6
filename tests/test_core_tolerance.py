"""The tolerance rule, written once in the core: its numpy and torch paths, its users.

A singular value counts for tolerance-ESS when it is strictly above ``tol`` (absolute)
or above ``tol * sigma_1`` of its split (relative). The app's re-thresholding and the
views' charts must give the core's numbers, also for rows that are not sorted.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ess_widgets.core import (
    DEFAULT_TOL,
    entropy_ess,
    tolerance_ess,
    tolerance_mask,
    tolerance_threshold,
)


def plain_count(rows: list[list[float]], tol: float, relative: bool) -> list[int]:
    """The rule as a plain loop over Python floats."""
    counts = []
    for row in rows:
        cut = tol * max(row, default=0.0) if relative else tol
        counts.append(sum(1 for sigma in row if sigma > cut))
    return counts


# Values on a coarse grid, so ties with the threshold (sigma == tol, sigma == tol * sigma_1)
# happen often.
GRID = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0])
spectra_arrays = st.tuples(st.integers(1, 5), st.integers(0, 5)).flatmap(
    lambda shape: hnp.arrays(np.float64, shape, elements=GRID)
)


@settings(max_examples=150, deadline=None)
@given(spectra_arrays, st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), st.booleans())
def test_numpy_and_torch_paths_agree_with_a_plain_loop(s, tol, relative):
    expected = plain_count(s.tolist(), tol, relative)
    from_numpy = tolerance_ess(s, tol, relative=relative)
    from_torch = tolerance_ess(torch.from_numpy(s), tol, relative=relative)
    assert from_numpy.dtype == from_torch.dtype == torch.int64
    assert from_numpy.tolist() == from_torch.tolist() == expected
    mask_np = tolerance_mask(s, tol, relative=relative)
    mask_t = tolerance_mask(torch.from_numpy(s), tol, relative=relative)
    assert isinstance(mask_np, np.ndarray) and isinstance(mask_t, torch.Tensor)
    np.testing.assert_array_equal(mask_np, mask_t.numpy())
    np.testing.assert_array_equal(mask_np.sum(-1), expected)
    cut_np = tolerance_threshold(s, tol, relative=relative)
    cut_t = tolerance_threshold(torch.from_numpy(s), tol, relative=relative)
    assert cut_np.shape == s.shape[:-1]
    np.testing.assert_array_equal(cut_np, cut_t.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_agree_between_paths(dtype):
    s = np.random.default_rng(0).exponential(size=(3, 7, 5)).astype(dtype)
    for tol, relative in [(0.3, False), (0.2, True), (0.0, False), (0.0, True)]:
        a = tolerance_ess(s, tol, relative=relative)
        b = tolerance_ess(torch.from_numpy(s), tol, relative=relative)
        assert torch.equal(a, b)
        assert a.tolist() == [plain_count(x, tol, relative) for x in s.astype(float).tolist()]


def test_known_values_and_ties():
    s = np.array([[4.0, 2.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.25], [1.0, 3.0, 0.0, 2.0]])
    assert tolerance_ess(s, 1.0).tolist() == [2, 0, 2]  # 1.0 itself does not count
    assert tolerance_ess(s, 0.0).tolist() == [3, 4, 3]  # zero padding never counts
    assert tolerance_ess(s, 0.5, relative=True).tolist() == [1, 2, 2]  # sigma_1 = 3 in row 3
    assert tolerance_threshold(s, 0.5, relative=True).tolist() == [2.0, 0.5, 1.5]
    assert tolerance_threshold(s, 0.5).tolist() == [0.5, 0.5, 0.5]
    empty = np.zeros((2, 0))
    assert tolerance_ess(empty, 0.1, relative=True).tolist() == [0, 0]
    assert tolerance_threshold(torch.zeros(2, 0), 0.1, relative=True).tolist() == [0.0, 0.0]
    for rows in (np.zeros((2, 3, 0)), torch.zeros(2, 3, 0)):  # no singular values at all
        assert np.asarray(tolerance_threshold(rows, 0.1, relative=True)).shape == (2, 3)
        assert tolerance_ess(rows, 0.1, relative=True).tolist() == [[0, 0, 0]] * 2
    no_splits = torch.zeros(2, 0, 4)
    assert tolerance_ess(no_splits, 0.1, relative=True).shape == (2, 0)
    # A list is read as numpy.
    assert tolerance_ess([[3.0, 1.0, 1e-9]], 1e-6).tolist() == [2]


def test_numpy_path_gives_numpy_back_without_a_copy():
    s = np.array([[3.0, 1.0, 1e-9]])
    counts = tolerance_ess(s, 1e-6)
    assert isinstance(counts, torch.Tensor)
    assert isinstance(counts.numpy(), np.ndarray)
    assert isinstance(tolerance_threshold(s, 1e-6), np.ndarray)
    assert isinstance(tolerance_threshold(torch.from_numpy(s), 1e-6), torch.Tensor)


# --- bad input: bug 5 (strings read as booleans) and friends ------------------------------


@pytest.mark.parametrize("function", [tolerance_ess, tolerance_mask, tolerance_threshold])
@pytest.mark.parametrize("relative", ["no", "False", 0, 1, None, torch.tensor(True)])
def test_relative_must_be_a_bool(function, relative):
    with pytest.raises(TypeError, match="`relative` must be True or False"):
        function(torch.ones(3, 2), 0.1, relative=relative)


@pytest.mark.parametrize("function", [tolerance_ess, tolerance_mask, tolerance_threshold])
def test_relative_accepts_numpy_bools_and_is_keyword_only(function):
    s = np.array([[4.0, 1.0]])
    np.testing.assert_array_equal(
        np.asarray(function(s, 0.5, relative=np.bool_(True))),
        np.asarray(function(s, 0.5, relative=True)),
    )
    with pytest.raises(TypeError, match="positional"):
        function(s, 0.5, True)
    for name in ("relative",):
        assert inspect.signature(function).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "tol, kind",
    [
        ("0.1", "str '0.1'"),
        (b"0.1", "bytes"),
        (True, "bool True"),
        (None, "NoneType"),
        ([0.1], "list"),
    ],
)
def test_tol_must_be_a_number(tol, kind):
    with pytest.raises(TypeError, match=f"`tol` must be a number, got {kind}"):
        tolerance_ess(torch.ones(3, 2), tol)


@pytest.mark.parametrize("function", [tolerance_ess, tolerance_mask, tolerance_threshold])
def test_absolute_by_default(function):
    s = np.array([[4.0, 1.0, 0.25]])
    assert inspect.signature(function).parameters["relative"].default is False
    np.testing.assert_array_equal(
        np.asarray(function(s, 0.5)), np.asarray(function(s, 0.5, relative=False))
    )
    assert not np.array_equal(
        np.asarray(function(s, 0.5)), np.asarray(function(s, 0.5, relative=True))
    )


@pytest.mark.parametrize(
    "s, error, match",
    [
        (np.array([[1.0, np.nan]]), ValueError, "`spectra` contains 1 NaN"),
        (np.array([[1.0, -1.0]]), ValueError, "^`spectra` holds negative"),
        (np.array([1.0, 2.0]), ValueError, r"shape \(\.\.\., L-1, K\)"),
        (np.array([[1 + 1j]]), TypeError, "^`spectra` must be real"),
        (np.array([["a"]]), TypeError, "^`spectra` must hold numbers"),
        ([[1.0], [1.0, 2.0]], TypeError, "^`spectra` must be a rectangular"),
    ],
    ids=["nan", "negative", "1d", "complex", "strings", "ragged"],
)
def test_numpy_path_checks_like_the_torch_path(s, error, match):
    with pytest.raises(error, match=match):
        tolerance_ess(s, 0.1)


def test_integer_and_bool_spectra_are_read_as_float64():
    ints = np.array([[3, 1, 0]])
    assert tolerance_ess(ints, 0.5).tolist() == [2]
    assert tolerance_threshold(ints, 0.5, relative=True).tolist() == [1.5]
    cut = tolerance_threshold(ints, 0.5)
    assert cut.dtype == np.float64 and cut.tolist() == [0.5]
    cut = tolerance_threshold(np.array([[True, False]]), 0.5)
    assert cut.dtype == np.float64 and cut.tolist() == [0.5]
    assert tolerance_ess(np.array([[True, False]]), 0.5).tolist() == [1]
    assert tolerance_threshold(np.array([[2, 1]], dtype=np.uint8), 0.5).tolist() == [0.5]
    assert tolerance_threshold(np.ones((1, 2), dtype=np.float32), 0.5).dtype == np.float32


# --- the rule's users: app and views call the core ----------------------------------------

UNSORTED = np.array([[1.0, 3.0, 0.0, 2.0], [0.5, 0.25, 1.0, 0.0]])


@pytest.mark.parametrize("tol, relative", [(0.5, True), (0.9, False), (0.34, True), (1.0, False)])
def test_app_rethreshold_is_the_core_rule(tol, relative):
    from ess_widgets.app.dashboard import LayerData

    data = LayerData.empty(
        layer=0,
        mixer="attention",
        family="softmax_attention",
        channel_name="head",
        tokens=["a", "b", "c"],
        num_channels=1,
        width=UNSORTED.shape[1],
        dense=lambda channel: np.zeros((3, 3)),
    )
    data.fill([0], [1, 2], UNSORTED[None])
    expected = tolerance_ess(UNSORTED, tol, relative=relative).numpy()
    np.testing.assert_array_equal(data.tolerance_ess(tol, relative=relative)[0], expected)
    np.testing.assert_array_equal(expected, plain_count(UNSORTED.tolist(), tol, relative))
    with pytest.raises(TypeError, match="`relative`"):
        data.tolerance_ess(tol, relative="no")


@pytest.mark.parametrize("tol, relative", [(0.5, True), (0.9, False), (0.34, True), (2.0, False)])
@pytest.mark.parametrize("row", [0, 1])
def test_chart_counts_are_the_core_rule(row, tol, relative):
    from ess_widgets.views import charts

    s = UNSORTED[row]
    expected = int(tolerance_ess(UNSORTED, tol, relative=relative)[row])
    cut = float(tolerance_threshold(UNSORTED, tol, relative=relative)[row])
    assert charts.tolerance_threshold(s, tol, relative) == cut
    frame = charts.spectrum_frame(s, tol=tol, relative=relative)
    assert int(frame["above"].sum()) == expected
    mask = tolerance_mask(UNSORTED, tol, relative=relative)[row]
    shown = sorted(zip(frame["sigma"].tolist(), frame["above"].tolist()))
    assert shown == sorted(zip(s[s > 0].tolist(), mask[s > 0].tolist()))
    subtitle = charts.spectrum_chart(s, tol=tol, relative=relative).to_dict()["title"]["subtitle"]
    assert f"tolerance-ESS = {expected}" in subtitle[0]


# --- DEFAULT_TOL, defined once ------------------------------------------------------------


def test_default_tol_is_defined_once_and_used():
    import ess_widgets.adapters as adapters
    from ess_widgets.adapters.handle import ModelHandle
    from ess_widgets.app import Explorer, show_attention, show_operator

    assert DEFAULT_TOL == 1e-3
    assert adapters.DEFAULT_TOL is DEFAULT_TOL
    assert inspect.signature(ModelHandle.ess_table).parameters["tol"].default is DEFAULT_TOL
    for function in (Explorer.__init__, show_operator, show_attention):
        assert inspect.signature(function).parameters["tol"].default is DEFAULT_TOL
    assert Explorer.class_traits()["tol"].default_value == DEFAULT_TOL


def test_the_cut_is_compared_in_the_dtype_of_the_spectra():
    # float32(0.1) > 0.1 in float64, but not in float32: both paths compare in float32.
    s32 = np.array([[np.float32(0.1), 0.05]], dtype=np.float32)
    assert tolerance_ess(s32, 0.1).tolist() == [0]
    assert tolerance_ess(torch.from_numpy(s32), 0.1).tolist() == [0]
    assert tolerance_threshold(s32, 0.1).dtype == np.float32
    assert tolerance_threshold(torch.from_numpy(s32), 0.1).dtype == torch.float32
    # 0.1 + 1e-12 > 0.1 in float64, not against the float32 rounding of 0.1 (0.10000000149).
    s64 = np.array([[0.1 + 1e-12, 0.05]])
    assert tolerance_ess(s64, 0.1).tolist() == [1]
    assert tolerance_ess(torch.from_numpy(s64), 0.1).tolist() == [1]
    assert tolerance_threshold(torch.from_numpy(s64), 0.1).dtype == torch.float64
    # relative: sigma_1 of a row whose values are all below 1 (no floor at 1 or 0 matters)
    s = np.array([[0.5, 0.25, 0.1]])
    assert tolerance_threshold(s, 0.5, relative=True).tolist() == [0.25]
    assert tolerance_ess(s, 0.5, relative=True).tolist() == [1]
    assert tolerance_ess(torch.from_numpy(s), 0.5, relative=True).tolist() == [1]


@pytest.mark.parametrize("measure", [tolerance_ess, lambda s, tol: entropy_ess(s)])
def test_torch_path_errors_name_spectra(measure):
    with pytest.raises(ValueError, match=r"^`spectra` contains 1 NaN and 0 Inf"):
        measure(torch.tensor([[1.0, float("nan")]]), 0.1)
    with pytest.raises(TypeError, match=r"^`spectra` must be a torch.Tensor or numpy array"):
        measure("abc", 0.1)
    with pytest.raises(TypeError, match=r"^`spectra` must be real"):
        measure(torch.ones(2, 2, dtype=torch.complex64), 0.1)
