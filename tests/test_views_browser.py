"""Views in a real browser: the TokenView front end alone, and the offline HTML export.

Chromium is driven by playwright (sync API) from /usr/bin/chromium; playwright's
own browser download does not work on the project machines.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
import torch

from ess_widgets.core import entropy_ess, spectra, tolerance_ess
from ess_widgets.views import (
    TokenView,
    ess_curve_chart,
    export_html,
    operator_heatmap,
    overview_chart,
    spectrum_chart,
    tolerance_vs_entropy_chart,
)
from ess_widgets.views import token_view as token_view_module

STATIC = pathlib.Path(token_view_module.__file__).parent / "static"
ARTIFACTS = pathlib.Path(__file__).parent / "_artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.errors = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    yield pg
    context.close()


def _rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[k : k + 2], 16) for k in (0, 2, 4)))


# Loads the widget module from its source text and renders it with a fake anywidget
# model (get/set/on/off/save_changes) that records what the view does.
MOUNT = """
async ({ src, css, state }) => {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const mod = await import(url);
  const listeners = {};
  const calls = [];
  const model = {
    get: (name) => state[name],
    set: (name, value) => {
      calls.push(["set", name, value]);
      state[name] = value;
      (listeners["change:" + name] || []).forEach((cb) => cb());
    },
    on: (event, cb) => { (listeners[event] = listeners[event] || []).push(cb); },
    off: (event, cb) => { listeners[event] = (listeners[event] || []).filter((f) => f !== cb); },
    save_changes: () => calls.push(["save_changes"]),
  };
  window.essw = { mod, model, calls, listeners };
  window.essw.cleanup = await mod.default.render({ model, el: document.getElementById("host") });
}
"""


def test_token_view_module_alone(page):
    tokens = ["<|im_start|>", "Hi", " there", HOSTILE, ".", "\n", "<|im_end|>", " bye"]
    ess = np.array([1.0, 2.0, 2.5, 3.0, 1.0, 1.0, 0.5])
    view = TokenView.from_ess(tokens, ess, value_label="tolerance-ESS (tol=1e-3, absolute)")
    state = {k: v for k, v in view.get_state().items() if not k.startswith("_")}
    page.set_content('<!DOCTYPE html><html><head></head><body><div id="host"></div></body></html>')
    page.evaluate(
        MOUNT,
        {
            "src": (STATIC / "token_view.js").read_text(),
            "css": (STATIC / "token_view.css").read_text(),
            "state": state,
        },
    )
    nodes = page.locator(".essw-token")
    assert nodes.count() == len(tokens)
    # colours: the Python and JS scales agree; the last token (no split after it) is grey
    vmax = float(ess.max())
    for t, tok in enumerate(tokens):
        node = nodes.nth(t)
        value = view.values[t]
        expected = _rgb(token_view_module.token_color(value, vmax))
        assert node.evaluate("n => getComputedStyle(n).backgroundColor") == expected, tok
    assert "essw-delim" in nodes.nth(0).get_attribute("class")  # <|im_start|>
    assert "essw-delim" not in nodes.nth(1).get_attribute("class")
    # hostile text is text: no element created, no dialog
    assert page.locator("#host img").count() == 0
    assert page.evaluate("document.getElementsByTagName('img').length") == 0
    assert nodes.nth(3).text_content() == "<img·src=x·onerror=alert(1)>"
    assert "token 3:" in nodes.nth(3).get_attribute("title")
    assert "3 (split i=4)" in nodes.nth(3).get_attribute("title")
    assert nodes.nth(5).text_content() == "⏎"
    assert page.locator(".essw-label").text_content() == "tolerance-ESS (tol=1e-3, absolute)"
    assert page.locator(".essw-max").text_content() == "3"
    # click token 2 -> split 3, saved
    nodes.nth(2).click()
    calls = page.evaluate("window.essw.calls")
    assert calls == [["set", "selected", 3], ["save_changes"]]
    assert "essw-selected" in nodes.nth(2).get_attribute("class")
    assert "split i=3" in page.locator(".essw-status").text_content()
    # the last token has no split after it: a click does nothing
    nodes.nth(len(tokens) - 1).click()
    assert page.evaluate("window.essw.calls.length") == 2
    # an error replaces the view with a readable message (its text escaped too)
    page.evaluate(f"window.essw.model.set('error', {HOSTILE!r})")
    assert page.locator(".essw-error").text_content() == HOSTILE
    assert page.locator(".essw-token").count() == 0
    assert page.evaluate("document.getElementsByTagName('img').length") == 0
    page.evaluate("window.essw.model.set('error', '')")
    assert page.locator(".essw-token").count() == len(tokens)
    # cleanup detaches the listeners
    page.evaluate("window.essw.cleanup()")
    assert page.evaluate("Object.values(window.essw.listeners).every(l => l.length === 0)")
    page.wait_for_timeout(100)
    assert page.dialogs == [] and page.errors == []


def test_export_html_renders_offline(page, tmp_path):
    g = torch.Generator().manual_seed(0)
    L = 32
    T = torch.tril(
        torch.randn(4, L, 4, generator=g, dtype=torch.float64)
        @ torch.randn(4, 4, L, generator=g, dtype=torch.float64)
    )
    S = spectra(T)
    tol = 1e-3
    tol_ess, ent_ess = tolerance_ess(S, tol), entropy_ess(S)
    words = "The cat sat on the mat . <|im_end|>\n A dog ran ! Then".split(" ")
    tokens = ["<|im_start|>", "user", "\n", HOSTILE, *[" " + w for w in words]]
    tokens += [f" w{k}" for k in range(L - len(tokens))]
    split = 12
    table = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(3), 4),
            "head": np.tile(np.arange(4), 3),
            "mean ESS": tol_ess.double().mean(-1).repeat(3).numpy(),
        }
    )
    charts = {
        "Spectrum": spectrum_chart(S[0, split - 1], tol=tol, split=split),
        "ESS along the sequence": ess_curve_chart(
            tol_ess[0], ent_ess[0], tss=4, split=split, tokens=tokens, tol=tol
        ),
        "Tolerance against entropy": tolerance_vs_entropy_chart(
            tol_ess, ent_ess, tol=tol, split=split
        ),
        "Operator": operator_heatmap(T[0], split=split, tokens=tokens),
        "Overview": overview_chart(table),
    }
    view = TokenView.from_ess(
        tokens, tol_ess[0], value_label="tolerance-ESS (tol=1e-3, absolute), head 0", selected=split
    )
    path = export_html(tmp_path / "report.html", charts, view, title="ESS report (test)")

    blocked = []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.goto(path.as_uri())
    for k in range(len(charts)):
        page.wait_for_selector(f"#essw-chart-{k} svg.marks", timeout=10_000)
    assert page.locator(".essw-chart-error").count() == 0
    assert page.locator(".essw-token").count() == len(tokens)
    assert page.locator(".essw-token.essw-selected").count() == 1
    assert page.locator(".essw-token").nth(3).text_content() == "<img·src=x·onerror=alert(1)>"
    assert page.evaluate("document.getElementsByTagName('img').length") == 0
    # the charts drew their titles (svg text)
    assert (
        "Singular values of T[i:, :i] at split i=12" in page.locator("#essw-chart-0").inner_text()
    )
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    page.screenshot(path=str(ARTIFACTS / "export_offline.png"), full_page=True)
    assert blocked == []
    assert page.dialogs == [] and page.errors == []
