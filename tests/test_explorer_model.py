"""The explorer end to end on the built-in model (smollm2-135m, loaded once for the module).

The widget shell and the dashboard are tested on arrays (test_explorer.py,
test_dashboard.py); here: the model's own operators reach the views, errors of the
model path show in the widget, and the explorer recovers.
"""

from __future__ import annotations

import numpy as np
import pytest

import ess_widgets
from ess_widgets.app import Explorer
from ess_widgets.core import entropy_ess, tolerance_ess
from ess_widgets.views import chart_data

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(1)>"
TEXT = "The cat sat on the mat. It was warm.\nThe dog ran to the park, and then it slept."


@pytest.fixture(scope="module")
def handle():
    return ess_widgets.load("smollm2-135m")


@pytest.fixture(scope="module")
def ex(handle):
    view = Explorer(model=handle, text=TEXT, layer=1, tol=1e-3).wait(600)
    assert view.error == "", view.error
    yield view
    view.close()


def test_views_show_the_models_operators(ex, handle):
    assert ex.handle is handle and ex.model == handle.name
    ops = handle.operators(TEXT, 1)
    S = ops.spectra()
    d = ex.layer_data()
    assert d.complete and d.tokens == ops.tokens and d.mixer == "attention"
    assert d.family == ops.operator.kind
    scale = float(S.max())
    np.testing.assert_allclose(d.spectra, S.numpy(), rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(d.tss, ops.tss.numpy())
    np.testing.assert_allclose(d.dense(4), ops.dense(channels=4)[0].double().numpy())
    np.testing.assert_allclose(d.entropy, entropy_ess(d.spectra).numpy(), rtol=1e-12)
    # the shown curve is the core's tolerance-ESS of these spectra
    frame = chart_data(ex.charts["ess_curve"])[0]
    rows = frame[frame["series"].str.startswith("tolerance-ESS")].sort_values("split")
    np.testing.assert_array_equal(rows["ESS"], tolerance_ess(d.spectra, 1e-3).numpy()[0])
    bound = frame[frame["series"].str.startswith("bound")].sort_values("split")
    np.testing.assert_array_equal(bound["ESS"], ops.bound.numpy())
    assert ex.token_view.tokens == list(ops.tokens) and ex.token_view.delimiters


def test_a_name_reuses_the_loaded_handle(handle):
    view = Explorer(model="smollm2-135m", text=TEXT, layer=0).wait(600)
    assert view.error == "" and view.handle is handle
    view.close()


def test_layer_switch_and_hostile_text(ex, handle, tmp_path):
    ex.layer = 4
    ex.wait(600)
    assert ex.layer_data().layer == 4 and "layer 4" in ex._summary.value
    ex.text = f"Look: {HOSTILE} here."
    ex.wait(600)
    assert ex.error == ""
    page = ex.export_html(tmp_path / "hostile.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page
    ex.text, ex.layer = TEXT, 1
    ex.wait(600)


def test_errors_show_in_widget_and_it_recovers(ex, handle):
    ex.model = "no-such-model"
    ex.wait(600)
    assert "not a built-in model" in ex.error and "smollm2-135m" in ex.error
    assert "not a built-in model" in ex._error_box.value
    assert ex._views.layout.display == "none"
    ex.model = handle.name  # the handle given to the explorer: no second load
    ex.wait(600)
    assert ex.error == "" and ex._views.layout.display is None
    ex.text = "   "
    ex.wait(600)
    assert "empty" in ex.error
    ex.max_tokens = 10
    ex.text = TEXT + " more"
    ex.wait(600)
    assert "at most 10" in ex.error
    ex.max_tokens = 4096
    ex.text = TEXT
    ex.wait(600)
    assert ex.error == "" and ex.layer_data().complete
