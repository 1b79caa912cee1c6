"""The explorer's widget shell on small array data: traits, controls, the background thread.

The numbers shown are held against the core measures on the same operators; the
progressive order, cancellation and non-blocking trait changes are observed through
the splits the worker receives (``LayerSource.iter_spectra``, split by split), never
through timing. The model end to end is in test_explorer_model.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ess_widgets.app import Explorer, show_attention, show_operator, sources
from ess_widgets.app import explorer as explorer_module
from ess_widgets.app.dashboard import MEAN
from ess_widgets.core import entropy_ess, spectra, tolerance_ess
from ess_widgets.views import chart_data

HOSTILE = "<img src=x onerror=alert(1)>"
C, L = 3, 24


def make_operators(seed: int, n: int = L, channels: int = C) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(channels, n, 3, generator=g, dtype=torch.float64) @ torch.randn(
        channels, 3, n, generator=g, dtype=torch.float64
    )
    return torch.tril(low + 1e-3 * torch.randn(channels, n, n, generator=g, dtype=torch.float64))


TOKENS = ["<|im_start|>", "user", "\n", HOSTILE, " Hi", "."] + [f" w{k}" for k in range(L - 6)]


@pytest.fixture(scope="module")
def layers() -> list[torch.Tensor]:
    return [make_operators(0), make_operators(1)]


@pytest.fixture
def ex(layers):
    view = show_operator(layers, TOKENS, tol=1e-3, split=9).wait(60)
    assert view.error == ""
    yield view
    view.close()


def observe(monkeypatch, before=None):
    """Log every split the worker receives, as ``(layer, channels, [split])``, in order.

    ``before(layer, channels, split)`` runs before each split is handed over (to hold
    the worker there). Array sources stream: the worker can stop between two splits.
    """
    seen = []
    original = sources.LayerSource.iter_spectra

    def recorded(self, channels, splits):
        for i, values in original(self, channels, splits):
            if before is not None:
                before(self.layer, list(channels), i)
            seen.append((self.layer, list(channels), [i]))
            yield i, values

    monkeypatch.setattr(sources.LayerSource, "iter_spectra", recorded)
    return seen


@pytest.fixture
def calls(monkeypatch):
    """Every (layer, channels, [split]) the worker computes, in order."""
    return observe(monkeypatch)


def shown_tolerance(view) -> np.ndarray:
    frame = chart_data(view.charts["ess_curve"])[0]
    rows = frame[frame["series"].str.startswith("tolerance-ESS")]
    return rows.sort_values("split")["ESS"].to_numpy()


# ----------------------------------------------------------------------------- numbers
def test_views_show_core_values(ex, layers):
    S = spectra(layers[0])
    tol_ess, ent = tolerance_ess(S, 1e-3).numpy(), entropy_ess(S).numpy()
    d = ex.layer_data()
    assert d.complete and ex.progress == 1.0 and not ex.busy
    np.testing.assert_allclose(d.spectra, S.numpy(), rtol=0, atol=1e-12)
    h, i = ex.head, ex.split
    assert (h, i) == (0, 9)
    points = chart_data(ex.charts["spectrum"])[1]
    s = S[h, i - 1].numpy()
    np.testing.assert_allclose(points["sigma"], s[s > 0])
    assert int(points["above"].sum()) == tol_ess[h, i - 1]
    np.testing.assert_array_equal(shown_tolerance(ex), tol_ess[h])
    frame = chart_data(ex.charts["ess_curve"])[0]
    ent_rows = frame[frame["series"] == "entropy-ESS"].sort_values("split")
    np.testing.assert_allclose(ent_rows["ESS"], ent[h], rtol=1e-12)
    scatter = chart_data(ex.charts["tolerance_vs_entropy"])[1]
    np.testing.assert_array_equal(scatter["tolerance_ESS"], tol_ess.ravel())
    assert ex.token_view.values == [*map(float, tol_ess[h]), None]
    assert ex.token_view.tokens == TOKENS and ex.token_view.selected == i
    cells = chart_data(ex.charts["operator"])[0]
    T = layers[0][h].numpy()
    np.testing.assert_allclose(
        cells["weight"], T[cells["output"].to_numpy(), cells["input"].to_numpy()]
    )
    cur = ex.current()
    np.testing.assert_array_equal(cur["tolerance_ess"], tol_ess)


def test_view_changes_rethreshold_cached_spectra(ex, layers, calls):
    S = spectra(layers[0])
    ex.tol = 0.05
    ex.relative = True
    np.testing.assert_array_equal(
        shown_tolerance(ex), tolerance_ess(S, 0.05, relative=True)[0].numpy()
    )
    assert "relative" in ex.token_view.value_label
    ex.split, ex.head = 3, 2
    assert "split i=3" in ex.charts["spectrum"].to_dict()["title"]["text"]
    ex.head = MEAN
    np.testing.assert_allclose(
        shown_tolerance(ex), tolerance_ess(S, 0.05, relative=True).numpy().mean(0)
    )
    assert "mean over 3 heads" in ex.token_view.value_label
    ex.token_view.selected = 12  # a click on token 11 selects split 12
    assert ex.split == 12 and ex._split_slider.value == 12
    ex.wait(10)
    assert calls == []  # nothing recomputed


def test_layer_change_and_cache(ex, layers, calls):
    ex.layer = 1
    ex.wait(60)
    S1 = spectra(layers[1])
    np.testing.assert_allclose(ex.layer_data().spectra, S1.numpy(), atol=1e-12)
    assert "layer 1" in ex.charts["ess_curve"].to_dict()["title"]["text"]
    n_calls = len(calls)
    assert n_calls > 0
    ex.layer = 0  # cached and complete: no new work
    ex.wait(60)
    assert len(calls) == n_calls and ex.layer_data().layer == 0


# ----------------------------------------------------------------------------- progressive
def test_progressive_order_covers_every_split_once(calls):
    T = make_operators(5, n=64, channels=4)
    view = show_operator(T, head=2, split=30).wait(120)
    assert view.error == "" and view.layer_data().complete
    assert view.timings["coarse_s"] <= view.timings["complete_s"]
    # the first chunk is the shown head at the selected split, then its coarse view
    assert calls[0] == (0, [2], [30])
    coarse = view.layer_data().coarse
    assert 30 in coarse or len(coarse) > 1
    first_other = next(k for k, (_, ch, _) in enumerate(calls) if ch != [2])
    head_2_before = {i for _, ch, sp in calls[:first_other] for i in sp}
    assert set(coarse) <= head_2_before | {30}
    # every (head, split) computed exactly once, and the values are the full computation's
    pairs = [(c, i) for _, ch, sp in calls for c in ch for i in sp]
    assert len(pairs) == len(set(pairs)) == 4 * 63
    np.testing.assert_allclose(view.layer_data().spectra, spectra(T).numpy(), atol=1e-12)
    view.close()


def test_setting_a_trait_returns_while_the_worker_computes(layers, monkeypatch):
    """The worker is held inside a chunk: the assignment returns all the same, busy is
    set, and wait() ends once the worker may go on."""
    ex = show_operator(layers, TOKENS).wait(60)
    gate, entered = threading.Event(), threading.Event()

    def held(layer, channels, split):
        entered.set()
        assert gate.wait(60)

    observe(monkeypatch, held)
    ex.layer = 1
    assert entered.wait(60)  # the worker is computing layer 1 now
    assert ex.busy is True and ex.layer == 1
    with pytest.raises(TimeoutError, match=r"timeout=0\.2"):
        ex.wait(0.2)
    ex.tol = 0.2  # the kernel side still answers: a re-threshold of what is shown
    assert ex.tol == 0.2
    gate.set()
    ex.wait(60)
    assert ex.busy is False and ex.progress == 1.0
    assert ex._progress_bar.layout.visibility == "hidden"
    np.testing.assert_array_equal(
        shown_tolerance(ex), tolerance_ess(spectra(layers[1]), 0.2)[0].numpy()
    )
    ex.close()


def test_a_newer_change_cancels_older_work(monkeypatch):
    """Layer 0 of a long operator is switched away during its first split: the worker
    stops it at the next split and shows layer 1; going back resumes layer 0 where it
    stopped (no split computed twice)."""
    T0, T1 = make_operators(7, n=96, channels=3), make_operators(8, n=96, channels=3)
    first_chunk, go_on = threading.Event(), threading.Event()

    def hold_first(layer, channels, split):
        if layer == 0 and not first_chunk.is_set():
            first_chunk.set()
            assert go_on.wait(60)

    log = observe(monkeypatch, hold_first)
    ex = show_operator([T0, T1])
    assert first_chunk.wait(60)
    ex.layer = 1  # while layer 0's first chunk is running
    go_on.set()
    ex.wait(120)
    assert ex.layer_data().layer == 1 and ex.layer_data().complete
    assert "layer 1" in ex._summary.value
    # layer 0 stopped after the split in flight
    assert [layer for layer, _, _ in log[:2]] == [0, 1]
    assert all(layer == 1 for layer, _, _ in log[1:])
    ex.layer = 0
    ex.wait(120)
    assert ex.layer_data().complete
    np.testing.assert_allclose(ex.layer_data().spectra, spectra(T0).numpy(), atol=1e-12)
    pairs = [(c, i) for layer, ch, sp in log if layer == 0 for c in ch for i in sp]
    assert len(pairs) == len(set(pairs)) == 3 * 95  # resumed, nothing computed twice
    ex.close()


# ----------------------------------------------------------------------------- bugs
def test_bad_arguments_are_type_errors_naming_them():
    """Bugs 5 and 9: no coercion of strings to booleans, None to text or "abc" to a float."""
    with pytest.raises(TypeError, match="`relative`"):
        Explorer(relative="no")
    with pytest.raises(TypeError, match="`text`"):
        Explorer(text=None)
    with pytest.raises(TypeError, match="`tol`"):
        Explorer(tol="abc")
    with pytest.raises(ValueError, match="`tol`"):
        Explorer(tol=-1.0)
    with pytest.raises(TypeError, match="`layer`"):
        Explorer(layer=1.5)
    with pytest.raises(TypeError, match="`model`"):
        Explorer(model=3)
    with pytest.raises(ValueError, match="`model`"):
        Explorer(model="  ")
    with pytest.raises(TypeError, match="`relative`"):
        show_operator(make_operators(0), relative="yes")


def test_tolerance_controls_agree_with_the_trait(ex):
    """Bug 7: tol = 0 (valid) cannot sit on a log slider; the text box shows it, the slider
    goes to its left end, and nothing writes the slider's value back into ``tol``."""
    ex.tol = 0.0
    assert ex.tol == 0.0
    assert ex._tol_text.value == 0.0
    assert ex._tol_slider.value == pytest.approx(10.0 ** explorer_module.TOL_EXPONENTS[0])
    np.testing.assert_array_equal(shown_tolerance(ex), (ex.layer_data().spectra[0] > 0).sum(-1))
    ex.tol = 100.0  # above the slider
    assert ex._tol_text.value == 100.0 and ex.tol == 100.0
    ex._tol_slider.value = 0.01  # the user moves the slider
    assert ex.tol == pytest.approx(0.01) and ex._tol_text.value == pytest.approx(0.01)
    ex._tol_text.value = 0.5  # or types a value
    assert ex.tol == 0.5 and ex._tol_slider.value == pytest.approx(0.5)
    ex._tol_text.value = -1.0  # refused: shown as an error, the box goes back
    assert "`tol`" in ex.error and ex.tol == 0.5 and ex._tol_text.value == 0.5
    with pytest.raises(Exception, match="`tol`"):
        ex.tol = float("nan")


def test_export_html_refuses_bad_paths_and_control_characters(ex, tmp_path, layers):
    """Bug 10: a NUL byte in token text is never written raw; the path must be an .html file."""
    with pytest.raises(ValueError, match=r"\.html"):
        ex.export_html(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="`path`"):
        ex.export_html("")
    with pytest.raises(ValueError, match="folder"):
        ex.export_html(tmp_path)
    tokens = [f"a\x00{k}\x1b" for k in range(L)]
    view = show_operator(layers[0], tokens).wait(60)
    page = view.export_html(tmp_path / "nul.html").read_text(encoding="utf-8")
    assert "\x00" not in page and "\x1b" not in page
    assert "a␀0␛" in page
    view.close()


def test_export_html_escapes_hostile_tokens(ex, tmp_path):
    page = ex.export_html(tmp_path / "explorer.html").read_text(encoding="utf-8")
    assert "Effective state-size explorer" in page and "essw-token" in page
    rest = page.replace(explorer_module.views.export.vega_bundle(), "")
    assert HOSTILE not in rest and "&lt;img src=x onerror=alert(1)&gt;" in rest


def test_save_charts(ex, tmp_path):
    pngs = ex.save_charts(tmp_path / "png")
    assert {p.name for p in pngs} >= {"spectrum.png", "ess_curve.png", "operator.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    with pytest.raises(ValueError, match="png"):
        ex.save_charts(tmp_path, format="jpg")


def test_errors_show_in_widget(ex):
    with pytest.raises(Exception, match="`head`"):
        ex.head = 3
    with pytest.raises(Exception, match="`split`"):
        ex.split = 0
    with pytest.raises(Exception, match="`layer`"):
        ex.layer = 2
    ex._head_dropdown.value = 2
    assert ex.head == 2 and ex.error == ""


# ----------------------------------------------------------------------------- overview
def test_overview_means_and_rethreshold(ex, layers):
    table = ex.compute_overview(wait=True)
    assert len(table) == 2 * C and set(table["splits"]) == {L - 1}
    for layer, T in enumerate(layers):
        S = spectra(T)
        rows = table[table["layer"] == layer].sort_values("channel")
        np.testing.assert_allclose(rows["tolerance_ess"], tolerance_ess(S, 1e-3).numpy().mean(1))
        np.testing.assert_allclose(rows["entropy_ess"], entropy_ess(S).numpy().mean(1))
    shown = chart_data(ex.charts["overview"])[0]
    assert len(shown) == len(table)
    ex.tol = 0.1  # re-thresholded too
    rows = ex.overview[ex.overview["layer"] == 1].sort_values("channel")
    np.testing.assert_allclose(
        rows["tolerance_ess"], tolerance_ess(spectra(layers[1]), 0.1).numpy().mean(1)
    )
    assert ex._overview_progress.layout.visibility == "hidden"


# ----------------------------------------------------------------------------- mixers
class TwoMixerSource(sources.ArraySource):
    """Every block has an attention mixer and an SSM mixer (as Falcon-H1 does)."""

    def __init__(self, attention, ssm):
        super().__init__(attention)
        self.ssm = sources.ArraySource(ssm, channel_name="channel", mixer="ssm")

    def mixers(self, layer):
        return ["attention", "ssm"]

    def layer(self, layer, mixer=None):
        if mixer == "ssm":
            return self.ssm.layer(layer)
        out = super().layer(layer)
        out.mixer = "attention"
        return out


def test_mixer_selector(layers):
    ssm = [make_operators(11, channels=2), make_operators(12, channels=2)]
    view = Explorer.from_source(TwoMixerSource(layers, ssm)).wait(60)
    assert view.mixer == "attention" and view._mixer_dropdown.layout.display is None
    assert [v for _, v in view._mixer_dropdown.options] == ["attention", "ssm"]
    view.mixer = "ssm"
    view.wait(60)
    assert view.layer_data().mixer == "ssm" and view.layer_data().num_channels == 2
    np.testing.assert_allclose(view.layer_data().spectra, spectra(ssm[0]).numpy(), atol=1e-12)
    assert "channel" in view._head_dropdown.description
    view.layer = 1  # the mixer stays when the new layer has it
    view.wait(60)
    assert view.mixer == "ssm"
    np.testing.assert_allclose(view.layer_data().spectra, spectra(ssm[1]).numpy(), atol=1e-12)
    view._mixer_dropdown.value = "attention"  # the control drives the trait
    view.wait(60)
    assert view.mixer == "attention" and view.layer_data().num_channels == C
    view.close()
    single = show_operator(layers[0]).wait(60)
    assert single._mixer_dropdown.layout.display == "none"
    single.close()


def test_show_attention_draws_the_tss():
    n = 12
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    g = torch.Generator().manual_seed(0)
    att = tuple(
        torch.softmax(torch.randn(1, 3, n, n, generator=g).masked_fill(~causal, -torch.inf), -1)
        for _ in range(2)
    )
    view = show_attention(att, [f" w{k}" for k in range(n)], layer=1, head=2, tol=1e-2).wait(60)
    assert view.error == "" and view.layer == 1 and view.head == 2
    S = spectra(att[1][0])
    np.testing.assert_array_equal(shown_tolerance(view), tolerance_ess(S, 1e-2)[2].numpy())
    tss = chart_data(view.charts["ess_curve"])[0]
    assert tss[tss["series"] == "TSS"]["ESS"].tolist() == list(range(1, n))
    with pytest.raises(ValueError, match=r"\(C, L, L\)"):
        show_operator(torch.zeros(3, 4, 5))
    view.close()
