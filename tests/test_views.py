"""Views: what each chart and the token view show equals the core measures on the same data."""

from __future__ import annotations

import json
import pathlib
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch

from ess_widgets.core import entropy_ess, ess_bound, spectra, tolerance_ess
from ess_widgets.views import (
    TokenView,
    channel_frame,
    chart_data,
    delimiter_kind,
    ess_curve_chart,
    ess_frame,
    export_html,
    find_delimiters,
    operator_heatmap,
    overview_chart,
    save_chart,
    spectrum_chart,
    spectrum_frame,
    token_values,
    token_view_html,
    tolerance_vs_entropy_chart,
)
from ess_widgets.views import token_view as token_view_module
from ess_widgets.views._format import display_token
from ess_widgets.views.export import vega_bundle

HOSTILE = "<img src=x onerror=alert(1)>"
L = 12
HEADS = 3


@pytest.fixture(scope="module")
def operators() -> torch.Tensor:
    """Causal operators (HEADS, L, L): rank-3 structure plus small noise, so ESS varies."""
    g = torch.Generator().manual_seed(0)
    low = torch.randn(HEADS, L, 3, generator=g, dtype=torch.float64) @ torch.randn(
        HEADS, 3, L, generator=g, dtype=torch.float64
    )
    noise = 1e-3 * torch.randn(HEADS, L, L, generator=g, dtype=torch.float64)
    return torch.tril(low + noise)


@pytest.fixture(scope="module")
def spec(operators) -> torch.Tensor:
    return spectra(operators)


@pytest.fixture(scope="module")
def tokens() -> list[str]:
    toks = ["<|im_start|>", "user", "\n", "Hi", " there", ".", HOSTILE, " ok", "?", "<|im_end|>"]
    return toks + [f" w{k}" for k in range(L - len(toks))]


# ----------------------------------------------------------------------------- charts
@pytest.mark.parametrize("relative", [False, True])
def test_ess_curve_shows_core_values(spec, tokens, relative):
    tol = 1e-2 if relative else 1e-3
    tol_ess = tolerance_ess(spec[0], tol, relative=relative)
    ent_ess = entropy_ess(spec[0])
    chart = ess_curve_chart(
        tol_ess, ent_ess, tss=3, split=5, tokens=tokens, tol=tol, relative=relative
    )
    shown = chart_data(chart)[0]
    by_series = {name: group.sort_values("split") for name, group in shown.groupby("series")}
    mode = "relative" if relative else "absolute"
    (tol_name,) = [n for n in by_series if n.startswith("tolerance-ESS")]
    assert mode in tol_name
    np.testing.assert_array_equal(by_series[tol_name]["ESS"], tol_ess.numpy())
    np.testing.assert_allclose(by_series["entropy-ESS"]["ESS"], ent_ess.numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(by_series["bound min(i, L-i)"]["ESS"], ess_bound(L).numpy())
    np.testing.assert_array_equal(by_series["TSS"]["ESS"], np.full(L - 1, 3.0))
    np.testing.assert_array_equal(by_series["entropy-ESS"]["split"], np.arange(1, L))
    # split i is the state right after token i-1
    row = by_series["entropy-ESS"].set_index("split").loc[7]
    assert row["token"] == display_token(tokens[6])
    # the selected split is a vertical rule at x = 5
    rules = [f for f in chart_data(chart)[2:] if "label" in f]
    assert rules and rules[0]["split"].tolist() == [5]
    # the chart data is what ess_frame gives
    frame = ess_frame(tol_ess, ent_ess, tss=3, tokens=tokens, tol=tol, relative=relative)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), frame, check_dtype=False)


def test_ess_curve_options_and_errors(spec):
    tol_ess = tolerance_ess(spec[0], 1e-3)
    series = set(chart_data(ess_curve_chart(tol_ess, None, bound=False))[0]["series"])
    assert series == {"tolerance-ESS"}
    tss_per_split = np.arange(1, L, dtype=float)  # softmax attention: TSS = i
    shown = chart_data(ess_curve_chart(None, entropy_ess(spec[0]), tss=tss_per_split))[0]
    np.testing.assert_array_equal(shown[shown.series == "TSS"]["ESS"], tss_per_split)
    with pytest.raises(ValueError, match="length L-1"):
        ess_curve_chart(tol_ess, np.ones(L - 2))
    with pytest.raises(ValueError, match="tokens"):
        ess_curve_chart(tol_ess, tokens=["a"] * (L - 1))
    with pytest.raises(ValueError, match="split"):
        ess_curve_chart(tol_ess, split=L)
    with pytest.raises(ValueError, match="tolerance_ess"):
        ess_curve_chart()


def _singular_values_tolerances(s: np.ndarray) -> list[float]:
    """Tolerances between consecutive singular values, below and above all of them."""
    pos = s[s > 0]
    mids = np.sqrt(pos[:-1] * pos[1:]) if len(pos) > 1 else np.array([])
    return [float(pos.min()) / 10, *map(float, mids), float(pos.max()) * 10]


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("split", [1, 4, 6, 9, 11])
def test_spectrum_count_equals_tolerance_ess(spec, split, relative):
    s = spec[1, split - 1]
    sigma_1 = float(s[0])
    for tol_abs in _singular_values_tolerances(s.numpy()):
        tol = tol_abs / sigma_1 if relative else tol_abs
        expected = int(tolerance_ess(spec[1], tol, relative=relative)[split - 1])
        chart = spectrum_chart(s, tol=tol, relative=relative, split=split)
        d = chart.to_dict()
        assert d["title"]["text"] == f"Singular values of T[i:, :i] at split i={split}"
        subtitle = d["title"]["subtitle"][0]
        assert f"tolerance-ESS = {expected}" in subtitle
        assert ("relative" if relative else "absolute") in subtitle
        points, _, rule, _ = chart_data(chart)
        assert int(points["above"].sum()) == expected
        # the rule sits at tol, or at tol * sigma_1 in relative mode
        threshold = tol * sigma_1 if relative else tol
        assert rule["threshold"].tolist() == pytest.approx([threshold], rel=1e-12)
        assert spectrum_frame(s, tol=tol, relative=relative)["above"].sum() == expected


def test_spectrum_drops_padding_zeros(spec):
    i = 2  # min(i, L-i) = 2 singular values, the rest of the row is padding
    s = spec[0, i - 1]
    assert (s[2:] == 0).all()
    points = chart_data(spectrum_chart(s, tol=1e-3, split=i))[0]
    assert points["rank"].tolist() == [1, 2]
    np.testing.assert_array_equal(points["sigma"], s[:2].numpy())
    # a zero block: nothing to plot, count 0, still a readable chart
    d = spectrum_chart(np.zeros(4), tol=1e-3).to_dict()
    assert "tolerance-ESS = 0" in d["title"]["subtitle"][0]
    assert "zero" in d["title"]["subtitle"][1]
    # tol = 0 cannot be drawn on a log axis: no rule, still the count
    assert len(chart_data(spectrum_chart(s, tol=0.0))) == 2
    with pytest.raises(ValueError, match=">= 0"):
        spectrum_chart(np.array([1.0, -1.0]), tol=1e-3)


def test_tolerance_vs_entropy_points(spec):
    tol_ess = tolerance_ess(spec, 1e-2)
    ent_ess = entropy_ess(spec)
    chart = tolerance_vs_entropy_chart(tol_ess, ent_ess, tol=1e-2, split=4)
    diagonal, points, ringed = chart_data(chart)
    pd.testing.assert_frame_equal(ringed, points)  # filtered to the split in the browser
    assert len(points) == HEADS * (L - 1)
    for _, row in points.iterrows():
        h, i = int(row["head"]), int(row["split"])
        assert row["tolerance_ESS"] == tol_ess[h, i - 1]
        assert row["entropy_ESS"] == ent_ess[h, i - 1]
    assert diagonal["entropy_ESS"].tolist() == diagonal["tolerance_ESS"].tolist()
    assert diagonal["entropy_ESS"].iloc[0] == 0
    assert diagonal["entropy_ESS"].iloc[-1] >= max(tol_ess.max(), ent_ess.max())
    d = chart.to_dict()
    assert d["layer"][2]["transform"][-1] == {"filter": "(datum.split === 4)"}
    pd.testing.assert_frame_equal(points, channel_frame(tol_ess, ent_ess), check_dtype=False)
    with pytest.raises(ValueError, match="same shape"):
        tolerance_vs_entropy_chart(tol_ess, ent_ess[:2])


@pytest.mark.parametrize("split", [1, 5, L - 1])
def test_heatmap_outlines_the_split_block(operators, tokens, split):
    T = operators[0]
    chart = operator_heatmap(T, split=split, tokens=tokens)
    cells, outline = chart_data(chart)
    assert outline.iloc[0][
        ["first_output", "last_output", "first_input", "last_input"]
    ].tolist() == [
        split,
        L - 1,
        0,
        split - 1,
    ]
    assert len(cells) == L * (L + 1) // 2  # the causal part only
    dense = np.zeros((L, L))
    dense[cells["output"], cells["input"]] = cells["weight"]
    np.testing.assert_array_equal(dense, T.numpy())
    # cell edges and the outline edges come from the same transform
    d = chart.to_dict()
    calc = {t["as"]: t["calculate"] for t in d["layer"][1]["transform"] if "calculate" in t}
    assert calc["x0"] == "datum.first_input - 0.5" and calc["y1"] == "datum.last_output + 0.5"
    assert d["layer"][0]["encoding"]["y"]["scale"]["reverse"] is True


def test_heatmap_errors():
    with pytest.raises(ValueError, match="square"):
        operator_heatmap(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="split"):
        operator_heatmap(np.eye(4), split=4)


def test_overview_chart():
    table = pd.DataFrame(
        {"layer": [0, 0, 1, 1], "channel": [0, 1, 0, 1], "mean ESS": [1.0, 2.0, 3.0, 4.5]}
    )
    chart = overview_chart(table)
    shown = chart_data(chart)[0]
    assert shown["ESS"].tolist() == [1.0, 2.0, 3.0, 4.5]
    d = chart.to_dict()
    assert d["encoding"]["color"]["title"] == "mean ESS"
    assert "layer" in d["title"]["text"]
    with pytest.raises(ValueError, match="value="):
        overview_chart(table.assign(other=1))
    with pytest.raises(ValueError, match="layer"):
        overview_chart(table.drop(columns="layer"))


def test_every_chart_has_titles_and_tooltips(operators, spec, tokens):
    tol_ess, ent_ess = tolerance_ess(spec, 1e-3), entropy_ess(spec)
    table = pd.DataFrame({"layer": [0], "head": [0], "ESS": [1.0]})
    charts = [
        spectrum_chart(spec[0, 3], tol=1e-3, split=4),
        ess_curve_chart(tol_ess[0], ent_ess[0], tokens=tokens, split=3),
        tolerance_vs_entropy_chart(tol_ess, ent_ess),
        operator_heatmap(operators[0], split=3),
        overview_chart(table),
    ]
    for chart in charts:
        d = chart.to_dict()
        assert d["title"]["text"]
        layers = d.get("layer", [d])
        encodings = [layer.get("encoding", {}) for layer in layers]
        assert any("tooltip" in e for e in encodings)
        assert all(e["x"].get("title") for e in encodings if "field" in e.get("x", {}))
        assert all(e["y"].get("title") for e in encodings if "field" in e.get("y", {}))


def test_heatmap_of_a_long_operator_shows_block_means():
    """Past ``max_side`` tokens each cell is the mean of a b x b block of the causal part
    (checked against a plain loop); the outline of the split block stays exact."""
    n, b = 23, 4
    g = torch.Generator().manual_seed(2)
    T = torch.tril(torch.randn(n, n, generator=g, dtype=torch.float64)).numpy()
    chart = operator_heatmap(T, split=10, max_side=6)  # ceil(23 / 6) = 4 tokens per cell
    cells, outline = chart_data(chart)
    assert set(cells["last_output"] - cells["output"]) <= set(range(b))
    for _, row in cells.iterrows():
        r0, r1, c0, c1 = (int(row[k]) for k in ("output", "last_output", "input", "last_input"))
        values = [T[r, c] for r in range(r0, r1 + 1) for c in range(c0, c1 + 1) if c <= r]
        assert row["weight"] == pytest.approx(sum(values) / len(values), abs=1e-12)
    assert len(cells) == 6 * 7 // 2  # the causal blocks of a 6 x 6 grid
    assert outline.iloc[0][
        ["first_output", "last_output", "first_input", "last_input"]
    ].tolist() == [10, n - 1, 0, 9]
    assert "mean over 4 × 4 blocks" in str(chart.to_dict()["title"])


def test_channel_frame_leaves_out_splits_not_computed():
    tol_ess = np.array([[1.0, np.nan, 2.0], [np.nan, np.nan, 1.0]])
    ent_ess = np.array([[1.0, np.nan, 1.5], [np.nan, np.nan, 1.0]])
    frame = channel_frame(tol_ess, ent_ess)
    assert frame[["head", "split"]].values.tolist() == [[0, 1], [0, 3], [1, 3]]
    chart = tolerance_vs_entropy_chart(tol_ess, ent_ess, split=3)
    assert len(chart_data(chart)[1]) == 3  # and its JSON has no NaN


# ----------------------------------------------------------------------------- token view
def test_find_delimiters():
    toks = ["<|im_start|>", "Hi", ".", " How", "?", "\n", "</s>", "3.14", "Ċ", "e.g.", "<0x0A>"]
    assert find_delimiters(toks) == [0, 2, 4, 5, 6, 8, 10]
    assert find_delimiters(toks, kinds=("special",)) == [0, 6]
    assert delimiter_kind("[SEP]") == "special"
    assert delimiter_kind(' ."') == "sentence_end"
    assert delimiter_kind("word") is None


def test_token_view_traits(spec, tokens):
    ess = tolerance_ess(spec[0], 1e-3)
    view = TokenView.from_ess(tokens, ess, value_label="tolerance-ESS (tol=1e-3, absolute)")
    assert view.tokens == tokens
    assert view.values == [*map(float, ess.tolist()), None]  # token t: split t+1
    assert view.value_label == "tolerance-ESS (tol=1e-3, absolute)"
    assert view.selected == -1 and view.vmax is None and view.error == ""
    assert view.delimiters == find_delimiters(tokens)
    for name in ("tokens", "values", "value_label", "selected", "delimiters", "vmax", "error"):
        assert view.trait_metadata(name, "sync") is True, name
    static = pathlib.Path(token_view_module.__file__).parent / "static"
    assert view._esm == (static / "token_view.js").read_text()
    assert view._css == (static / "token_view.css").read_text()
    state = view.get_state()
    assert state["values"][-1] is None and state["tokens"][6] == HOSTILE


def test_token_view_updates_and_validation(tokens):
    view = TokenView(tokens[:3], np.array([1.0, np.nan, 2.0]))
    assert view.values == [1.0, None, 2.0]
    view.selected = 2
    view.update_ess(torch.tensor([4.0, 5.0]), value_label="entropy-ESS", vmax=8)
    assert view.values == [4.0, 5.0, None]
    assert (view.value_label, view.vmax, view.selected) == ("entropy-ESS", 8.0, 2)
    view.update_ess([1.0], tokens=["a", "b"])
    assert view.tokens == ["a", "b"] and view.selected == -1
    with pytest.raises(ValueError, match="one value per split"):
        view.update_ess([1.0, 2.0, 3.0])
    with pytest.raises(Exception, match="selected"):
        view.selected = -2
    with pytest.raises(Exception, match="vmax"):
        view.vmax = 0.0
    assert token_values([1, 2], 3) == [1.0, 2.0, None]


def test_token_colors_match_js():
    js = (pathlib.Path(token_view_module.__file__).parent / "static" / "token_view.js").read_text()
    stops = re.search(r"const COLOR_STOPS = \[(.*?)\];", js).group(1)
    assert tuple(json.loads(f"[{stops}]")) == token_view_module.COLOR_STOPS
    assert token_view_module.token_color(0.0, 4.0) == token_view_module.COLOR_STOPS[0]
    assert token_view_module.token_color(4.0, 4.0) == token_view_module.COLOR_STOPS[-1]
    assert token_view_module.token_color(None, 4.0) == token_view_module.NULL_COLOR


def test_token_view_js_never_uses_innerhtml():
    js = (pathlib.Path(token_view_module.__file__).parent / "static" / "token_view.js").read_text()
    code = "\n".join(line for line in js.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code


def test_token_view_html_escapes():
    out = token_view_html(["a", HOSTILE, '"q"&', "\n"], [1.0, 2.0, 3.0, None], selected=2)
    assert "<img" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "&quot;q&quot;&amp;" in out
    assert 'class="essw-token essw-selected" data-index="1"' in out
    assert token_view_html([], error="Text <b>too</b> long").count("&lt;b&gt;") == 1


# ----------------------------------------------------------------------------- export
def test_export_html_escapes_hostile_tokens(tmp_path, operators, spec, tokens):
    tol_ess, ent_ess = tolerance_ess(spec[0], 1e-3), entropy_ess(spec[0])
    view = TokenView.from_ess(tokens, tol_ess, value_label=f"ESS {HOSTILE}")
    charts = {
        f"ESS {HOSTILE}": ess_curve_chart(tol_ess, ent_ess, tokens=tokens, split=7),
        "Operator": operator_heatmap(operators[0], split=7, tokens=tokens),
    }
    path = export_html(tmp_path / "report.html", charts, view, title=f"Report {HOSTILE}")
    page = path.read_text(encoding="utf-8")
    assert page.count(vega_bundle()) == 1
    rest = page.replace(vega_bundle(), "")
    assert "<img" not in rest.lower()
    assert "onerror=alert(1)&gt;" in rest  # escaped, in the token view and the headings
    assert "</script" not in vega_bundle()
    # the chart specs survive the escaping
    specs = re.search(r'id="essw-specs">(.*?)</script>', rest, re.S).group(1)
    decoded = json.loads(specs)
    assert len(decoded) == 2 and display_token(HOSTILE) in json.dumps(decoded, ensure_ascii=False)
    assert "http://" not in rest and "https://" not in rest.replace("https://vega", "")


def test_export_html_refuses_bad_paths_and_writes_no_control_characters(tmp_path):
    """Bug 10: HTML is never written into a .png, an empty path names `path`, and token text
    with NUL or ESC is shown as control pictures, never raw."""
    tokens = ["a\x00b", "\x1b[31m", "c"]
    with pytest.raises(ValueError, match=r"\.html"):
        export_html(tmp_path / "x.png", token_view={"tokens": tokens})
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="`path`"):
        export_html("", token_view={"tokens": tokens})
    with pytest.raises(ValueError, match="folder"):
        export_html(tmp_path, token_view={"tokens": tokens})
    with pytest.raises(TypeError, match="`path`"):
        export_html(3, token_view={"tokens": tokens})
    page = export_html(
        tmp_path / "t.HTM", token_view={"tokens": tokens}, title="t\x00", description="d\x07"
    ).read_text(encoding="utf-8")
    assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in page)
    assert "a␀b" in page and "␛[31m" in page and "t␀" in page and "d␇" in page
    assert display_token("x\x00\x7f") == "x␀␡"


def test_export_html_without_charts(tmp_path, tokens):
    page = export_html(tmp_path / "t.html", token_view={"tokens": tokens}).read_text()
    assert "vegaEmbed" not in page and "essw-token" in page
    with pytest.raises(TypeError, match="altair"):
        export_html(tmp_path / "x.html", charts=[object()])


def test_save_chart_png_and_svg(tmp_path, spec):
    chart = spectrum_chart(spec[0, 4], tol=1e-3, split=5)
    png = save_chart(chart, tmp_path / "spectrum.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_chart(chart, tmp_path / "spectrum.svg")
    root = ET.fromstring(svg.read_text(encoding="utf-8"))
    assert root.tag.endswith("svg")
    assert "Singular values" in svg.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        save_chart(chart, tmp_path / "spectrum.pdf")
