"""CorpusExplorer: the views of a sweep, a click from a head to its texts, and the Explorer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import ess_widgets
from ess_widgets.app.corpus_explorer import CorpusExplorer
from ess_widgets.corpus import head_means, head_texts, read_sweep, sweep, sweep_settings

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny model (corpus_models.py)
from corpus_models import CORPUS, tiny_llama_folder


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    model = tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"))
    out = tmp_path_factory.mktemp("sweep") / "ess.parquet"
    return sweep(model, CORPUS, tol=1e-2, relative=True, out=out, shard_size=3, progress=False)


@pytest.fixture(scope="module")
def explorer(swept):
    return CorpusExplorer(swept.path, n_boot=50)


def _chart_values(jupyter_chart):
    spec = jupyter_chart.chart.to_dict()
    return spec["datasets"][spec["data"]["name"]]


def test_heatmap_shows_the_head_means(explorer, swept):
    assert ess_widgets.CorpusExplorer is CorpusExplorer
    expected = head_means(read_sweep(swept.path), n_boot=50)
    shown = {(v["layer"], v["channel"]): v["mean"] for v in _chart_values(explorer.heatmap)}
    assert shown == {(int(r.layer), int(r.channel)): r.mean for r in expected.itertuples()}
    assert explorer.error == ""


def test_click_lists_the_driving_texts(explorer, swept):
    # What the browser sends on a click (the selection belongs to the front end).
    explorer.heatmap._vl_selections = {
        "cell": {"value": {"vlPoint": {"or": [{"layer": 1, "channel": 0}]}}, "store": []}
    }
    assert (explorer.layer, explorer.channel) == (1, 0)
    expected = head_texts(read_sweep(swept.path), 1, 0, n=5)
    assert explorer.driving_texts["text_id"].tolist() == expected["text_id"].tolist()
    np.testing.assert_allclose(explorer.driving_texts["mean"], expected["mean"])
    rows = explorer._texts_box.children[1:]
    assert [r.children[0].description for r in rows] == [
        f"open text {t}" for t in expected["text_id"]
    ]


def test_value_change_recomputes(explorer, swept):
    explorer.value = "entropy_ess/tss"
    expected = head_means(read_sweep(swept.path), "entropy_ess/tss", n_boot=50)
    shown = sorted(v["mean"] for v in _chart_values(explorer.heatmap))
    np.testing.assert_allclose(shown, sorted(expected["mean"]))
    explorer.value = "entropy_ess"


def test_open_text_in_the_explorer(explorer, swept):
    explorer.select(1, 1)
    text_id = int(explorer.driving_texts["text_id"].iloc[0])
    ex = explorer.open_text(text_id).wait(300)  # no load left running in the worker
    assert ex.text == CORPUS[text_id] and (ex.layer, ex.head) == (1, 1)
    assert ex.model == sweep_settings(swept.path)["model"]  # the folder the sweep loaded
    assert ex.error == ""
    assert explorer._explorer_box.children == (ex,)
    explorer.open_text(0, layer=0, channel=0).wait(300)  # reused through its public traits
    assert explorer.explorer is ex and ex.text == CORPUS[0] and ex.layer == 0
    with pytest.raises(ValueError, match="token-id input"):
        explorer.open_text(5)  # CORPUS[5] is token ids


def test_texts_are_escaped(swept, tmp_path):
    model = tiny_llama_folder(tmp_path / "m")
    out = tmp_path / "ess"
    sweep(model, ["<b>bold</b> & <script>x</script>."], out=out, progress=False)
    ce = CorpusExplorer(out, n_boot=10)
    ce.select(0, 0)
    html_text = ce._texts_box.children[1].children[1].value
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
