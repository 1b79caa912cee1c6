"""The explorer's dashboard, without widgets or threads: layer data in, numbers and charts out.

Every number is held against the core measures on the same spectra, or against a plain
loop (the planner).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ess_widgets.app import dashboard
from ess_widgets.app.dashboard import MEAN, LayerData, ViewState
from ess_widgets.app.sources import ArraySource, split_spectra
from ess_widgets.core import entropy_ess, spectra, tolerance_ess
from ess_widgets.views import chart_data

C, L = 3, 14


@pytest.fixture(scope="module")
def operators() -> torch.Tensor:
    """(C, L, L) causal operators: rank 2 plus small noise, so ESS varies with the tolerance."""
    g = torch.Generator().manual_seed(3)
    low = torch.randn(C, L, 2, generator=g, dtype=torch.float64) @ torch.randn(
        C, 2, L, generator=g, dtype=torch.float64
    )
    return torch.tril(low + 1e-4 * torch.randn(C, L, L, generator=g, dtype=torch.float64))


def complete_data(T: torch.Tensor) -> LayerData:
    source = ArraySource([T], [f"t{k}" for k in range(T.shape[-1])], tss=2)
    layer = source.layer(0)
    data = layer.new_data()
    data.fill(
        range(T.shape[0]),
        range(1, T.shape[-1]),
        layer.spectra(range(T.shape[0]), range(1, T.shape[-1])),
    )
    return data


def test_fill_and_numbers_equal_core(operators):
    data = complete_data(operators)
    S = spectra(operators)
    np.testing.assert_allclose(data.spectra, S.numpy(), rtol=0, atol=1e-12)
    assert data.complete and data.progress == 1.0
    np.testing.assert_allclose(data.entropy, entropy_ess(S).numpy(), rtol=1e-12)
    for relative, tol in ((False, 1e-3), (True, 1e-2)):
        state = ViewState(head=1, split=5, tol=tol, relative=relative)
        n = dashboard.view_numbers(data, state)
        expected = tolerance_ess(S, tol, relative=relative).numpy()
        np.testing.assert_array_equal(n["tolerance_ess"], expected)
        np.testing.assert_array_equal(n["curve_tolerance"], expected[1])
        np.testing.assert_allclose(n["spectrum"], S[1, 4].numpy(), atol=1e-12)
        assert n["shown_head"] == 1 and n["split"] == 5
        np.testing.assert_array_equal(n["curve_tss"], np.full(L - 1, 2.0))


def test_mean_view_shows_the_channel_closest_to_the_mean(operators):
    data = complete_data(operators)
    S = spectra(operators)
    state = ViewState(head=MEAN, split=7, tol=1e-3, relative=False)
    n = dashboard.view_numbers(data, state)
    tol_ess = tolerance_ess(S, 1e-3).numpy().astype(float)
    np.testing.assert_allclose(n["curve_tolerance"], tol_ess.mean(0))
    np.testing.assert_allclose(n["curve_entropy"], entropy_ess(S).numpy().mean(0))
    column = tol_ess[:, 6]
    distances = np.abs(column - column.mean())
    assert distances[n["shown_head"]] == distances.min()


def test_partial_data_is_nan_where_not_computed(operators):
    full = complete_data(operators)
    data = ArraySource([operators]).layer(0).new_data()
    splits = [1, 5, 9, 13]
    data.fill([0], splits, full.spectra[[0]][:, np.array(splits) - 1])
    data.fill([1, 2], [5], full.spectra[[1, 2]][:, [4]])
    assert not data.complete
    assert data.progress == pytest.approx((4 + 2) / (C * (L - 1)))
    n = dashboard.view_numbers(data, ViewState(head=0, split=9, tol=1e-3, relative=False))
    finite = np.isfinite(n["curve_tolerance"])
    assert np.flatnonzero(finite).tolist() == [s - 1 for s in splits]
    np.testing.assert_array_equal(
        n["curve_tolerance"][finite], tolerance_ess(full.spectra[0], 1e-3).numpy()[finite]
    )
    # the mean is known only where every channel is
    m = dashboard.view_numbers(data, ViewState(head=MEAN, split=5, tol=1e-3, relative=False))
    assert np.flatnonzero(np.isfinite(m["curve_tolerance"])).tolist() == [4]
    # a split not computed for the shown channel: no spectrum yet, a placeholder chart
    p = dashboard.view_numbers(data, ViewState(head=1, split=9, tol=1e-3, relative=False))
    assert p["spectrum"] is None
    charts = dashboard.build_charts(data, ViewState(1, 9, 1e-3, False), p)
    assert "computing" in str(charts["spectrum"].to_dict())
    # the scatter has a point for every computed (channel, split), none for the rest
    scatter = chart_data(charts["tolerance_vs_entropy"])[1]
    assert len(scatter) == int(data.computed.sum())
    # the summary shows "…" for numbers not computed yet
    assert "…" in dashboard.summary_html(data, ViewState(1, 9, 1e-3, False), p)


def test_charts_show_the_numbers(operators):
    data = complete_data(operators)
    state = ViewState(head=2, split=6, tol=1e-3, relative=False)
    n = dashboard.view_numbers(data, state)
    charts = dashboard.build_charts(data, state, n)
    assert set(charts) == set(dashboard.CHARTS)
    points = chart_data(charts["spectrum"])[1]
    s = n["spectrum"]
    np.testing.assert_allclose(points["sigma"], s[s > 0])
    curve = chart_data(charts["ess_curve"])[0]
    rows = curve[curve["series"].str.startswith("tolerance-ESS")].sort_values("split")
    np.testing.assert_array_equal(rows["ESS"], n["curve_tolerance"])
    cells = chart_data(charts["operator"])[0]
    T = data.dense(2)
    np.testing.assert_allclose(
        cells["weight"], T[cells["output"].to_numpy(), cells["input"].to_numpy()]
    )
    # only the charts that depend on a change are rebuilt
    assert dashboard.charts_to_build({"tol"}) == {"spectrum", "ess_curve", "tolerance_vs_entropy"}
    assert dashboard.charts_to_build({"head"}) == {"spectrum", "ess_curve", "operator"}
    assert dashboard.charts_to_build({"data"}) == {
        "spectrum",
        "ess_curve",
        "tolerance_vs_entropy",
    }
    assert set(dashboard.build_charts(data, state, n, {"operator"})) == {"operator"}


def test_noise_floor_note_for_tolerances_below_it(operators):
    """Bug 11: float32 operators go through the Gram path, whose values below about
    1e-8 sigma_1 are noise; the dashboard says so at such tolerances."""
    data = complete_data(operators.to(torch.float32))
    assert 1e-8 <= data.noise_floor <= 1e-7
    low = ViewState(head=0, split=6, tol=1e-10, relative=True)
    n = dashboard.view_numbers(data, low)
    assert n["below_noise_floor"]
    assert "noise floor" in dashboard.summary_html(data, low, n)
    high = ViewState(head=0, split=6, tol=1e-3, relative=True)
    assert not dashboard.view_numbers(data, high)["below_noise_floor"]
    assert "noise floor" not in dashboard.summary_html(
        data, high, dashboard.view_numbers(data, high)
    )
    # absolute tolerances compare with the floor times sigma_1 of the split
    sigma_1 = float(data.spectra[0, 5, 0])
    tiny = ViewState(head=0, split=6, tol=0.1 * data.noise_floor * sigma_1, relative=False)
    assert dashboard.view_numbers(data, tiny)["below_noise_floor"]
    # float64 operators (SVD path): the slider's smallest tolerance is above the floor
    assert not dashboard.view_numbers(complete_data(operators), low)["below_noise_floor"]


def test_split_spectra_equal_the_full_computation(operators):
    splits = [7, 1, 13, 4]
    for T in (operators, operators.to(torch.float32)):
        got = split_spectra(T, splits)
        full = spectra(T)
        np.testing.assert_array_equal(got.numpy(), full[:, [i - 1 for i in splits]].numpy())


# ----------------------------------------------------------------------------- planning
def test_stride_splits_and_costs():
    assert dashboard.stride_splits(10, 1) == list(range(1, 10))
    assert dashboard.stride_splits(10, 4) == [1, 5, 9]
    assert dashboard.stride_splits(12, 4) == [1, 5, 9, 11]
    assert dashboard.stride_splits(5, 100) == [1, 4]
    costs = dashboard.split_costs(9, structured=False)
    m, n = (
        np.minimum(np.arange(1, 9), 9 - np.arange(1, 9)),
        np.maximum(np.arange(1, 9), 9 - np.arange(1, 9)),
    )
    np.testing.assert_array_equal(costs, m * m * (n + 4 * m))
    assert (dashboard.split_costs(9, structured=True) == 1).all()


def test_choose_stride_fits_the_budget():
    costs = dashboard.split_costs(1025, structured=False)
    full = costs.sum()
    assert dashboard.choose_stride(costs, 1.0 / full, budget_s=1.0) == 1  # all fits
    speed = 8.0 / full  # every split would take 8 s
    stride = dashboard.choose_stride(costs, speed, budget_s=1.0)
    chosen = np.asarray(dashboard.stride_splits(1025, stride)) - 1
    assert costs[chosen].sum() * speed <= 1.0
    for finer in range(1, stride):  # every smaller stride is predicted to take longer
        rows = np.asarray(dashboard.stride_splits(1025, finer)) - 1
        assert costs[rows].sum() * speed > 1.0


@pytest.mark.parametrize("shown", [2, MEAN])
def test_next_chunk_order_and_cover(shown):
    """A plain simulation: every (channel, split) is computed exactly once, in the order
    split first, coarse view of the shown channel, coarse others, then the rest."""
    Cn, Ln, split = 5, 40, 17
    costs = dashboard.split_costs(Ln, structured=False)
    coarse = dashboard.stride_splits(Ln, 8)
    computed = np.zeros((Cn, Ln - 1), dtype=bool)
    speed = 0.25 / costs[: Ln // 2].sum()  # a chunk holds about half of one channel
    seen = np.zeros((Cn, Ln - 1), dtype=int)
    stages = []
    target = set(range(Cn)) if shown == MEAN else {shown}
    for _ in range(10_000):
        chunk = dashboard.next_chunk(
            computed, costs, coarse=coarse, shown=shown, split=split, seconds_per_cost=speed
        )
        if chunk is None:
            break
        channels, splits = chunk
        assert splits == sorted(splits) and channels
        rows = np.asarray(splits) - 1
        assert not computed[np.ix_(channels, rows)].any()
        if len(splits) > 1:  # within the time target
            assert len(channels) * costs[rows].sum() * speed <= 0.25 + 1e-12
        seen[np.ix_(channels, rows)] += 1
        computed[np.ix_(channels, rows)] = True
        in_coarse = set(splits) <= set(coarse)
        stages.append((set(channels) <= target, in_coarse))
    assert (seen == 1).all()
    # the first chunk is the selected split of the shown channel(s)
    first = dashboard.next_chunk(
        np.zeros((Cn, Ln - 1), bool),
        costs,
        coarse=coarse,
        shown=shown,
        split=split,
        seconds_per_cost=speed,
    )
    assert first[1] == [split] and set(first[0]) <= target
    # stage order: shown coarse, then (others coarse), then shown rest, then others rest
    order = [0 if (mine and co) else 1 if co else 2 if mine else 3 for mine, co in stages]
    assert order == sorted(order), order


def test_next_chunk_calibrates_with_one_split():
    computed = np.zeros((2, 9), dtype=bool)
    costs = dashboard.split_costs(10, structured=False)
    chunk = dashboard.next_chunk(
        computed, costs, coarse=[1, 5, 9], shown=0, split=5, seconds_per_cost=None
    )
    assert chunk == ([0], [5])
    computed[0, 4] = True
    assert dashboard.next_chunk(
        computed, costs, coarse=[1, 5, 9], shown=0, split=5, seconds_per_cost=None
    )[1] in ([1], [9])


def test_next_chunk_groups_cheap_channels():
    """A structured path: whole channels with all their splits go together."""
    computed = np.zeros((50, 19), dtype=bool)
    costs = dashboard.split_costs(20, structured=True)
    computed[:, :] = True
    computed[:, 3] = False  # one split missing everywhere
    channels, splits = dashboard.next_chunk(
        computed,
        costs,
        coarse=[4],
        shown=MEAN,
        split=4,
        seconds_per_cost=1e-3,
        channel_cost=20.0,
    )
    # 0.25 s at 1e-3 s per unit: 250 units, 21 per channel (the scan and one split)
    assert splits == [4] and channels == list(range(11))


def test_next_chunk_streamed_takes_a_whole_channel_per_step():
    """A streaming source: one channel and every split it misses in the current step of
    the order (the worker can stop between splits), whatever the time budget."""
    Cn, Ln, split = 3, 40, 17
    costs = dashboard.split_costs(Ln, structured=False)
    coarse = dashboard.stride_splits(Ln, 8)
    computed = np.zeros((Cn, Ln - 1), dtype=bool)
    kwargs = dict(coarse=coarse, shown=1, split=split, streamed=True)
    # before any measurement: the selected split alone (it measures the speed)
    assert dashboard.next_chunk(computed, costs, seconds_per_cost=None, **kwargs) == (
        [1],
        [split],
    )
    computed[1, split - 1] = True
    tiny = 1e-9 / costs.sum()  # a budget far below one split
    chunks = []
    while chunk := dashboard.next_chunk(computed, costs, seconds_per_cost=tiny, **kwargs):
        channels, splits = chunk
        assert len(channels) == 1 and not computed[channels[0], np.asarray(splits) - 1].any()
        computed[channels[0], np.asarray(splits) - 1] = True
        chunks.append((channels[0], splits))
    assert computed.all()
    assert split in coarse
    assert chunks == [
        (1, [i for i in coarse if i != split]),
        (0, coarse),
        (2, coarse),
        (1, [i for i in range(1, Ln) if i not in coarse]),
        (0, [i for i in range(1, Ln) if i not in coarse]),
        (2, [i for i in range(1, Ln) if i not in coarse]),
    ]
