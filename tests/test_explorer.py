"""The explorer at the Python level: shown values, caching, traitlets, errors, exports.

One smollm2-135m load per session (``load_model`` keeps it); texts are short.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from ess_widgets.adapters import LayerOperators, ModelHandle
from ess_widgets.app import Explorer, show_attention, show_operator
from ess_widgets.app.explorer import MEAN
from ess_widgets.core import entropy_ess, tolerance_ess
from ess_widgets.views import chart_data

HOSTILE = "<img src=x onerror=alert(1)>"
TEXT = "The cat sat on the mat. It was warm.\nThe dog ran to the park, and then it slept."
LONG_TEXT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, built in 1889. "
    "Where is the tower? It stands in Paris, next to the river Seine.\n"
    "Many people visit it every year, and the view from the top is wide. "
    "In the evening the tower shines with thousands of small lights, and the river "
    "boats pass under the bridges while the city slowly goes to sleep. "
    "The end of the story is near, and the last words are written here. "
    "Tomorrow the visitors will come back again, with cameras, maps and many questions, "
    "and the guides will answer them all."
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ex():
    torch.set_num_threads(1)
    explorer = Explorer(text=TEXT, layer=1, head=0, tol=1e-3)
    assert explorer.error == ""
    return explorer


@pytest.fixture
def counters(monkeypatch):
    """Count spectra computations and forward passes."""
    calls = {"spectra": 0, "operators": 0}
    spectra, operators = LayerOperators.spectra, ModelHandle.operators

    def counted_spectra(self, *args, **kwargs):
        calls["spectra"] += 1
        return spectra(self, *args, **kwargs)

    def counted_operators(self, *args, **kwargs):
        calls["operators"] += 1
        return operators(self, *args, **kwargs)

    monkeypatch.setattr(LayerOperators, "spectra", counted_spectra)
    monkeypatch.setattr(ModelHandle, "operators", counted_operators)
    return calls


def shown_tolerance(ex) -> np.ndarray:
    """The tolerance-ESS curve the ESS chart shows."""
    frame = chart_data(ex.charts["ess_curve"])[0]
    rows = frame[frame["series"].str.startswith("tolerance-ESS")]
    return rows.sort_values("split")["ESS"].to_numpy()


def test_views_show_core_values(ex):
    d = ex.layer_data()
    S = torch.from_numpy(d.spectra)
    tol_ess = tolerance_ess(S, ex.tol).numpy()
    ent = entropy_ess(S).numpy()
    # the cached spectra are those of the adapter
    fresh = ex.handle.operators(TEXT, ex.layer).spectra()
    np.testing.assert_allclose(d.spectra, fresh.numpy(), rtol=1e-12, atol=1e-12)
    h, i = ex.head, ex.split
    # (1) spectrum: its points are the non-zero singular values at the split
    points = chart_data(ex.charts["spectrum"])[1]
    s = d.spectra[h, i - 1]
    np.testing.assert_allclose(points["sigma"].to_numpy(), s[s > 0])
    assert int(points["above"].sum()) == tol_ess[h, i - 1]
    assert f"tolerance-ESS = {tol_ess[h, i - 1]}" in str(ex.charts["spectrum"].to_dict()["title"])
    # (2) the curves
    frame = chart_data(ex.charts["ess_curve"])[0]
    np.testing.assert_array_equal(shown_tolerance(ex), tol_ess[h])
    ent_rows = frame[frame["series"] == "entropy-ESS"].sort_values("split")
    np.testing.assert_allclose(ent_rows["ESS"].to_numpy(), ent[h])
    bound = frame[frame["series"].str.startswith("bound")].sort_values("split")
    np.testing.assert_array_equal(bound["ESS"].to_numpy(), ex.handle.operators(TEXT, 1).bound)
    # scatter: one point per split and head
    scatter = chart_data(ex.charts["tolerance_vs_entropy"])[1]
    assert len(scatter) == tol_ess.size
    np.testing.assert_array_equal(scatter["tolerance_ESS"].to_numpy(), tol_ess.ravel())
    np.testing.assert_allclose(scatter["entropy_ESS"].to_numpy(), ent.ravel())
    # (3) token view: token t carries split t + 1; the last token none
    assert ex.token_view.values == [*map(float, tol_ess[h]), None]
    assert ex.token_view.tokens == list(d.tokens)
    assert ex.token_view.selected == i
    assert ex.token_view.delimiters  # the sentence ends and the newline
    # (4) heatmap of the head, block outlined at the split
    cells = chart_data(ex.charts["operator"])[0]
    T = d.dense(h)
    np.testing.assert_allclose(
        cells["weight"].to_numpy(), T[cells["output"].to_numpy(), cells["input"].to_numpy()]
    )
    outline = chart_data(ex.charts["operator"])[1]
    assert outline["first_output"].tolist() == [i]


def test_tolerance_rethresholds_cached_spectra(ex, counters):
    before = shown_tolerance(ex)
    ex.tol = 0.05
    ex.tol = 0.2
    after = shown_tolerance(ex)
    assert counters == {"spectra": 0, "operators": 0}
    S = torch.from_numpy(ex.layer_data().spectra)
    np.testing.assert_array_equal(after, tolerance_ess(S, 0.2)[ex.head].numpy())
    assert not np.array_equal(before, after)
    ex.relative = True
    np.testing.assert_array_equal(
        shown_tolerance(ex), tolerance_ess(S, 0.2, relative=True)[ex.head].numpy()
    )
    assert "relative" in ex.token_view.value_label
    ex.split, ex.head = 3, 2
    assert counters == {"spectra": 0, "operators": 0}
    with ex.hold_trait_notifications():
        ex.tol, ex.relative, ex.head = 1e-3, False, 0


def test_traits_update_views(ex, counters):
    ex.layer = 4  # one new layer: one forward pass, one spectra
    assert counters == {"spectra": 1, "operators": 1}
    assert "layer 4" in ex.charts["ess_curve"].to_dict()["title"]["text"]
    ex.layer = 1  # cached
    assert counters == {"spectra": 1, "operators": 1}
    d = ex.layer_data()
    ex.head = MEAN
    tol_ess = d.tolerance_ess(ex.tol)
    np.testing.assert_allclose(shown_tolerance(ex), tol_ess.mean(0))
    assert "mean over 9 heads" in ex.token_view.value_label
    ex.split = 7
    assert "split i=7" in ex.charts["spectrum"].to_dict()["title"]["text"]
    assert chart_data(ex.charts["operator"])[1]["first_output"].tolist() == [7]
    # a click in the token view (token 11) selects split 12
    ex.token_view.selected = 12
    assert ex.split == 12
    assert "split i=12" in ex.charts["spectrum"].to_dict()["title"]["text"]
    # controls follow the traits, and the traits the controls
    assert ex._split_slider.value == 12 and ex._head_dropdown.value == MEAN
    ex._tol_slider.value = 0.01
    assert ex.tol == pytest.approx(0.01)
    with pytest.raises(Exception, match="head"):
        ex.head = 9
    with pytest.raises(Exception, match="split"):
        ex.split = 0
    ex.head, ex.tol = 0, 1e-3


def test_burst_ends_consistent(ex, counters):
    for layer, head, tol, split in [(2, 1, 0.1, 5), (3, 4, 1e-4, 9), (5, 3, 0.02, 11)]:
        ex.layer, ex.head, ex.tol, ex.split = layer, head, tol, split
    with ex.hold_trait_notifications():
        ex.layer = 6
        ex.head = 8
        ex.tol = 0.3
        ex.split = 4
        ex.tol = 0.03
        ex.layer = 2
    assert (ex.layer, ex.head, ex.tol, ex.split) == (2, 8, 0.03, 4)
    d = ex.layer_data()
    assert d.layer == 2
    expected = d.tolerance_ess(0.03)[8]
    np.testing.assert_array_equal(shown_tolerance(ex), expected)
    assert ex.token_view.values[:-1] == [float(v) for v in expected]
    assert "split i=4" in ex.charts["spectrum"].to_dict()["title"]["text"]
    assert ", head 8" in ex.charts["spectrum"].to_dict()["title"]["text"]
    assert "layer 2" in ex.charts["operator"].to_dict()["title"]["text"]
    assert ex.busy is False and ex.error == ""
    ex.layer, ex.head, ex.tol = 1, 0, 1e-3


def test_errors_show_in_widget_and_it_recovers(ex):
    ex.model = "no-such-model"
    assert "not a built-in model" in ex.error and "smollm2-135m" in ex.error
    assert "not a built-in model" in ex._error_box.value
    assert ex._views.layout.display == "none"
    assert ex.token_view.error == ex.error
    ex.tol = 0.1  # no data: nothing drawn, no exception
    ex.model = HOSTILE
    assert HOSTILE not in ex._error_box.value and "&lt;img" in ex._error_box.value
    ex.model = "smollm2-135m"
    assert ex.error == "" and ex._error_box.value == ""
    assert ex._views.layout.display is None
    assert ex.token_view.error == ""
    ex.text = "   "
    assert "empty" in ex.error
    ex.max_tokens = 10
    ex.text = TEXT + " more"
    assert "at most 10" in ex.error
    ex.max_tokens = 256
    ex.text = TEXT
    assert ex.error == ""
    S = torch.from_numpy(ex.layer_data().spectra)
    np.testing.assert_array_equal(shown_tolerance(ex), tolerance_ess(S, 0.1)[ex.head].numpy())
    ex.tol = 1e-3


def test_export_html_escapes_hostile_tokens(ex, tmp_path):
    path = ex.export_html(tmp_path / "explorer.html")
    page = path.read_text()
    assert "Effective state-size explorer" in page and "essw-token" in page
    # a hostile token label in an explorer on user data
    L = 8
    tokens = ["a", HOSTILE, "b", ".", "\n", "c", "d", "e"]
    T = torch.tril(torch.rand(2, L, L, generator=torch.Generator().manual_seed(0)))
    user = show_operator(T, tokens)
    page = user.export_html(tmp_path / "user.html").read_text()
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    # and a hostile text through the model's tokenizer
    ex.text = f"Look: {HOSTILE} here."
    page = ex.export_html(tmp_path / "hostile.html").read_text()
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page
    ex.text = TEXT


def test_save_charts(ex, tmp_path):
    pngs = ex.save_charts(tmp_path / "png")
    assert {p.name for p in pngs} >= {"spectrum.png", "ess_curve.png", "operator.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    svgs = ex.save_charts(tmp_path / "svg", format="svg")
    assert all("<svg" in p.read_text()[:500] for p in svgs)
    with pytest.raises(ValueError, match="png"):
        ex.save_charts(tmp_path, format="jpg")


def test_overview(ex):
    table = ex.compute_overview()
    assert len(table) == ex.handle.num_layers * 9
    d = ex.layer_data(1)
    rows = table[table["layer"] == 1].sort_values("head")
    np.testing.assert_allclose(rows["tolerance_ess"], d.tolerance_ess(ex.tol).mean(1))
    np.testing.assert_allclose(rows["entropy_ess"], d.entropy.mean(1))
    shown = chart_data(ex.charts["overview"])[0]
    assert len(shown) == len(table)
    ex.tol = 0.1  # the overview is re-thresholded too
    rows = ex._overview_table[ex._overview_table["layer"] == 1].sort_values("head")
    np.testing.assert_allclose(rows["tolerance_ess"], d.tolerance_ess(0.1).mean(1))
    ex.tol = 1e-3


def test_standalone_views():
    L = 12
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    att = tuple(
        torch.softmax(torch.randn(1, 3, L, L).masked_fill(~causal, float("-inf")), -1)
        for _ in range(2)
    )
    tokens = [f" w{k}" for k in range(L)]
    view = show_attention(att, tokens, layer=1, head=2, tol=1e-2)
    assert view.error == "" and view.layer == 1 and view.head == 2
    S = torch.from_numpy(view.layer_data().spectra)
    np.testing.assert_array_equal(shown_tolerance(view), tolerance_ess(S, 1e-2)[2].numpy())
    tss = chart_data(view.charts["ess_curve"])[0]
    assert tss[tss["series"] == "TSS"]["ESS"].tolist() == list(range(1, L))
    view.layer = 0
    assert view.layer_data().layer == 0
    with pytest.raises(ValueError, match=r"\(C, L, L\)"):
        show_operator(torch.zeros(3, 4, 5))


def test_rethreshold_time(ex):
    ex.text = LONG_TEXT
    L = ex.layer_data().length
    assert 120 <= L <= 140, L
    spectra = ex.layer_data().spectra
    t0 = time.perf_counter()
    for tol in np.logspace(-4, -1, 20):
        ex.layer_data().tolerance_ess(tol)
    threshold_ms = (time.perf_counter() - t0) / 20 * 1e3
    updates = []
    for tol in np.logspace(-4, -1, 8):
        ex.tol = float(tol)
        updates.append(ex.last_update_ms)
    t0 = time.perf_counter()
    ex.layer = 7
    layer_ms = (time.perf_counter() - t0) * 1e3
    print(
        f"\nL={L} tokens, spectra {spectra.shape}: numpy re-threshold {threshold_ms:.2f} ms; "
        f"tolerance change (re-threshold + chart specs) median {statistics.median(updates):.0f} "
        f"ms; layer change (forward + spectra + charts) {layer_ms:.0f} ms"
    )
    assert statistics.median(updates) < 2000  # loose sanity bound only
    ex.text, ex.layer, ex.tol = TEXT, 1, 1e-3
