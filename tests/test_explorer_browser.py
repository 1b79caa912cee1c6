"""The explorer in a real browser: JupyterLab on 127.0.0.1 driven by Chromium (playwright).

Runs notebooks/02 with Run All, waits for the charts and the token view, moves the
tolerance slider from the keyboard, checks that the shown ESS changed, and saves
docs/screenshots/explorer.png. Then a ~1,000-token text: the coarse view appears while
the progress bar is part way, a layer change from the keyboard mid-refinement shows the
new layer, and its progress bar advances to done. Then opens an explorer HTML export
offline. Every request that does not go to 127.0.0.1 (or a file) is blocked.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = "02_explore_language_model.ipynb"
SCREENSHOT = ROOT / "docs" / "screenshots" / "explorer.png"
HOSTILE = "<img src=x onerror=alert(1)>"
ARTIFACTS = pathlib.Path(__file__).parent / "_artifacts"  # git-ignored

pytestmark = pytest.mark.slow
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError
PlaywrightError = pytest.importorskip("playwright.sync_api").Error


@pytest.fixture(scope="module")
def lab(jupyter_server):
    """JupyterLab on 127.0.0.1 with isolated config, settings and workspaces."""
    server = jupyter_server("lab", notebook=ROOT / "notebooks" / NOTEBOOK)
    server.start(
        [
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={server.port}",
            f"--IdentityProvider.token={server.token}",
            f"--ServerApp.root_dir={server.root}",
            "--ServerApp.open_browser=False",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    )
    yield server
    server.stop()


def _shown_tol_ess(page) -> str:
    return page.locator(".essw-shown-tol-ess").first.inner_text()


def _open_and_run_all(page, lab, notebook: str):
    """Open ``notebook`` in JupyterLab, start its kernel and Run All; returns its panel."""
    page.goto(f"{lab.url}/lab/tree/{notebook}?reset&token={lab.token}")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel.wait_for(timeout=60_000)
    # a fresh server may ask which kernel to start: take the default (Python 3)
    select = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        select.wait_for(timeout=5_000)
        select.click()
    except PlaywrightTimeout:
        pass
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
        timeout=60_000
    )
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator("li[data-command='runmenu:run-all']").click()
    return panel


def test_explorer_notebook_in_jupyterlab(lab, browser, only_local):
    # tall enough for the whole explorer (the notebook scrolls inside its panel)
    context = browser.new_context(viewport={"width": 1700, "height": 2000})
    page = context.new_page()
    blocked, errors, dialogs = [], [], []
    page.route("**/*", only_local(blocked))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    panel = _open_and_run_all(page, lab, NOTEBOOK)

    explorer = panel.locator(".essw-explorer")
    try:
        explorer.wait_for(timeout=90_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "explorer_failure.png"))
        print(lab.log.read_text()[-4000:])
        raise
    # charts drawn by vega (svg or canvas) and the token view
    explorer.locator(".essw-token").first.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.essw-explorer .vega-embed svg.marks, "
        ".essw-explorer .vega-embed canvas').length >= 4",
        timeout=60_000,
    )
    assert explorer.locator(".essw-token").count() > 20
    assert explorer.locator(".essw-token.essw-delim").count() >= 2
    assert "Singular values of T[i:, :i]" in explorer.inner_text()
    # wait for Run All to finish (the last cell prints the skip note)
    panel.locator(".jp-OutputArea-output").filter(has_text="falcon-mamba-7b").wait_for(
        timeout=60_000
    )

    before = _shown_tol_ess(page)
    label_before = explorer.locator(".essw-label").inner_text()
    # a real UI interaction: focus the tolerance slider and step it up from the keyboard
    slider = explorer.locator(".widget-slider").filter(has_text="tolerance")
    handle = slider.locator(".noUi-handle")

    def exponent() -> float:  # the slider's own value, log10(tol), as noUiSlider shows it
        return float(handle.get_attribute("aria-valuenow"))

    assert exponent() == -3.0
    for _ in range(40):  # steps of 0.1 decade, 1e-3 -> 1e-2; a key lost under load is retried
        if exponent() >= -2.0:
            break
        handle.focus()  # a redraw of the views may move the focus: take it back each step
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(150)
    assert exponent() == -2.0
    page.wait_for_function(
        "(before) => { const b = document.querySelector('.essw-explorer .essw-label'); "
        "return b && b.textContent !== before; }",
        arg=label_before,
        timeout=30_000,
    )
    page.wait_for_function(
        "() => /tol=0\\.01,/.test(document.querySelector('.essw-explorer .essw-summary')"
        "?.textContent || '')",
        timeout=60_000,
    )
    after = _shown_tol_ess(page)
    assert after != before, (before, after)
    assert "tol=0.01," in explorer.locator(".essw-label").inner_text()

    # a click on a token selects the split right after it
    explorer.locator(".essw-token").nth(19).click()
    page.wait_for_function(
        "() => /split i=20\\b/.test(document.querySelector('.essw-explorer .essw-summary')"
        "?.textContent || '')",
        timeout=30_000,
    )
    page.wait_for_timeout(1500)  # let vega finish redrawing
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    explorer.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    explorer.screenshot(path=str(SCREENSHOT))
    # the notebook's "Open in Colab" badge is the only remote resource (an image)
    assert [u for u in blocked if "colab-badge" not in u] == [], blocked
    assert dialogs == []
    assert not [e for e in errors if "essw" in e or "vega" in e.lower()], errors
    context.close()


# ~1,000 tokens of plain English for smollm2-135m; the kernel is never blocked by a cell
PROGRESSIVE_SOURCE = """\
from ess_widgets.app import Explorer

SENTENCES = [
    "The river runs through the old town, past the market and the cathedral.",
    "In the evening the bridges are lit, and the boats pass slowly under them.",
    "A small bakery near the square sells bread, cakes and coffee every morning.",
    "Visitors ask the guides about the history of the walls and the towers.",
    "The library keeps maps, letters and books that are several centuries old.",
    "When it rains, people wait under the arcades and talk about the weather.",
]
TEXT = " ".join(SENTENCES[k % len(SENTENCES)] + f" Day {k}." for k in range(51))
ex = Explorer(text=TEXT, layer=2)
ex
"""


def _notebook(source: str) -> str:
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": "progressive",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
            ],
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


PROGRESS_JS = """() => {
  const box = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .essw-progress');
  if (!box) return null;
  if (getComputedStyle(box).visibility === 'hidden') return 100;
  const bar = box.querySelector('.progress-bar');
  return bar ? parseFloat(bar.style.width || '0') : null;
}"""


def _progress_percent(page) -> float | None:
    """Width of the refinement progress bar, in percent (100 once hidden: done); None while
    the page is too busy to answer (a plain evaluate, no locator waits)."""
    try:
        return page.evaluate(PROGRESS_JS)
    except PlaywrightError:
        return None


def test_progressive_explorer_in_jupyterlab(lab, browser, only_local):
    """A ~1,000-token text: coarse view first, refinement with a progress bar, and a layer
    change mid-refinement that shows the new layer."""
    (lab.root / "progressive.ipynb").write_text(_notebook(PROGRESSIVE_SOURCE))
    context = browser.new_context(viewport={"width": 1700, "height": 2000})
    page = context.new_page()
    blocked, errors = [], []
    page.route("**/*", only_local(blocked))
    page.on("pageerror", lambda e: errors.append(str(e)))
    panel = _open_and_run_all(page, lab, "progressive.ipynb")
    explorer = panel.locator(".essw-explorer")
    summary = ".essw-explorer .essw-summary"
    try:
        # the coarse view of layer 2, with the refinement part way
        page.wait_for_function(
            f"() => /layer 2 \\(/.test(document.querySelector('{summary}')?.textContent || '')",
            timeout=300_000,
        )
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "progressive_failure.png"))
        print(lab.log.read_text()[-4000:])
        raise
    n_tokens = explorer.locator(".essw-token").count()
    assert 900 <= n_tokens <= 1100, n_tokens
    first = _progress_percent(page)
    # the first view of a 1,000-token layer is not complete yet
    assert first is not None and first < 100.0, first
    # a layer change from the keyboard, mid-refinement
    handle = explorer.locator(".widget-slider").filter(has_text="layer").locator(".noUi-handle")
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        f"() => /layer 3 \\(/.test(document.querySelector('{summary}')?.textContent || '')",
        timeout=120_000,
    )
    assert "layer 3" in explorer.locator(".essw-summary").inner_text()
    # the progress bar advances to done
    seen = []
    for _ in range(300):
        page.wait_for_timeout(2_000)
        percent = _progress_percent(page)
        if percent is not None:
            seen.append(percent)
        if seen and seen[-1] >= 100.0:
            break
    assert seen[-1] >= 100.0, seen[-10:]
    assert any(0 < p < 100 for p in seen), seen[:10]  # it showed partial progress
    assert seen == sorted(seen), seen  # never went back
    page.wait_for_function(
        f"() => !/…/.test(document.querySelector('{summary}')?.textContent || '…')",
        timeout=30_000,
    )
    assert [u for u in blocked if "colab-badge" not in u] == [], blocked
    assert not [e for e in errors if "essw" in e or "vega" in e.lower()], errors
    context.close()


def test_export_html_offline(browser, only_local, tmp_path):
    from ess_widgets.app import show_operator

    L = 24
    g = torch.Generator().manual_seed(1)
    T = torch.tril(torch.randn(3, L, 3, generator=g) @ torch.randn(3, 3, L, generator=g))
    tokens = ["<|im_start|>", "user", "\n", HOSTILE] + [f" w{k}." for k in range(L - 4)]
    ex = show_operator(T, tokens, tol=1e-3, split=9).wait(60)
    path = ex.export_html(tmp_path / "explorer.html")
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    blocked, errors, dialogs = [], [], []
    page.route("**/*", only_local(blocked))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    for k in range(len(ex.charts)):
        page.wait_for_selector(f"#essw-chart-{k} svg.marks", timeout=15_000)
    assert page.locator(".essw-chart-error").count() == 0
    assert page.locator(".essw-token").count() == L
    assert page.locator(".essw-token").nth(3).text_content() == "<img·src=x·onerror=alert(1)>"
    assert page.evaluate("document.getElementsByTagName('img').length") == 0
    assert re.search(r"split i=9", page.locator("body").inner_text())
    assert blocked == [] and errors == [] and dialogs == []
    context.close()
