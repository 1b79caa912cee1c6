"""The explorer notebook in Voila and in Jupyter Notebook 7, driven by Chromium (playwright).

Voila runs notebooks/02 on the server and streams the page: the test waits for the charts and
the token view, checks that the ESS the widget shows equals the one the next cell prints,
clicks a token and checks that the split moved, and saves tests/_artifacts/voila.png.
Notebook 7 opens the same notebook at /notebooks/..., runs all cells from the Run menu, waits
for the charts and the token view, checks the same number, and saves
tests/_artifacts/notebook7.png. Both servers run on 127.0.0.1 with every Jupyter dir in a temp
dir; every request that does not go to 127.0.0.1 is blocked.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = "02_explore_language_model.ipynb"
ARTIFACTS = pathlib.Path(__file__).parent / "_artifacts"  # git-ignored
CHARTS = (
    "() => document.querySelectorAll('.essw-explorer .vega-embed svg.marks, "
    ".essw-explorer .vega-embed canvas').length >= 4"
)
# Remote URLs the pages reference and may lose offline: the notebook's "Open in Colab" badge
# (an image) and the Font Awesome CSS that Voila's "lab" template links from jsDelivr (Voila's
# own bundle already carries Font Awesome; the explorer uses none of it).
EXPECTED_REMOTE = ("colab.research.google.com/assets/colab-badge", "@fortawesome/fontawesome-free")

pytestmark = pytest.mark.slow
pytest.importorskip("playwright.sync_api")


def _new_page(browser, only_local):
    context = browser.new_context(viewport={"width": 1500, "height": 2200})
    page = context.new_page()
    page.blocked, page.errors, page.dialogs = [], [], []
    page.route("**/*", only_local(page.blocked))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return context, page


def _check_clean(page):
    assert [u for u in page.blocked if not any(k in u for k in EXPECTED_REMOTE)] == [], page.blocked
    assert page.dialogs == []
    assert not [e for e in page.errors if "essw" in e or "vega" in e.lower()], page.errors


def _wait_for_explorer(page, scope, server, shot: str):
    """Token view and at least 4 vega charts drawn; on a timeout save a screenshot and the log."""
    explorer = scope.locator(".essw-explorer")
    try:
        explorer.locator(".essw-token").first.wait_for(timeout=120_000)
        page.wait_for_function(CHARTS, timeout=60_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        print(server.log.read_text()[-4000:])
        raise
    assert explorer.locator(".essw-token").count() > 20
    assert explorer.locator(".essw-token.essw-delim").count() >= 2
    assert "Singular values of T[i:, :i]" in explorer.inner_text()
    return explorer


def _check_shown_matches_printed(explorer, scope):
    """The ESS the widget's summary shows is the one the next cell prints from Python."""
    summary = explorer.locator(".essw-summary")
    m = re.search(
        r"split i=(\d+)\b.*tolerance-ESS = (\d+) \(tol=1e-3, absolute\) · entropy-ESS = ([\d.]+)",
        summary.inner_text(),
    )
    assert m, summary.inner_text()
    split, tol_ess, ent_ess = m.groups()
    assert explorer.locator(".essw-shown-tol-ess").inner_text() == tol_ess
    printed = scope.locator(".jp-OutputArea-output").filter(has_text="tolerance-ESS ").last
    assert printed.inner_text().strip() == (
        f"layer 0, head 0, split {split}: tolerance-ESS {tol_ess}, entropy-ESS {ent_ess}"
    )
    return summary


def _wait_kernel_connected(page, server, timeout: float = 60) -> None:
    """The page's kernel is started, idle and has a websocket open. (Notebook 7 shows
    "Kernel status: Idle" for a moment before its kernel exists; a Run All then runs nothing.)
    Waits with page.wait_for_timeout: playwright's sync API serves the route handler (and so
    every request of the page) only while it is called."""
    url = f"{server.url}/api/kernels?token={server.token}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(url, timeout=5) as r:
            kernels = json.load(r)
        if any(k["connections"] > 0 and k["execution_state"] == "idle" for k in kernels):
            return
        page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notebook7_failure.png"))
    pytest.fail(
        f"no connected idle kernel after {timeout:.0f} s:\n{server.log.read_text()[-3000:]}"
    )


@pytest.fixture
def voila(jupyter_server, require):
    require("voila", "voila>=0.5")
    server = jupyter_server("voila", notebook=ROOT / "notebooks" / NOTEBOOK)
    server.start(
        [
            "voila",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={server.port}",
            "--Voila.port_retries=0",
            f"--Voila.connection_dir_root={server.base / 'runtime'}",
            "--VoilaConfiguration.show_tracebacks=True",
            str(server.root / NOTEBOOK),
        ]
    )
    yield server
    server.stop()


@pytest.fixture
def notebook7(jupyter_server, require):
    require("notebook", "notebook>=7")
    server = jupyter_server("notebook7", notebook=ROOT / "notebooks" / NOTEBOOK)
    server.start(
        [
            "notebook",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={server.port}",
            f"--IdentityProvider.token={server.token}",
            f"--ServerApp.root_dir={server.root}",
            "--ServerApp.open_browser=False",
        ]
    )
    yield server
    server.stop()


def test_explorer_in_voila(voila, browser, only_local):
    context, page = _new_page(browser, only_local)
    # Voila runs every cell before it sends the widgets: wait for them, not for "load"
    page.goto(f"{voila.url}/", wait_until="commit", timeout=60_000)
    explorer = _wait_for_explorer(page, page, voila, "voila_failure.png")

    summary = _check_shown_matches_printed(explorer, page)

    # a click on a token selects the split right after it: summary and split slider follow
    before = summary.inner_text()
    explorer.locator(".essw-token").nth(9).click()
    page.wait_for_function(
        "() => /split i=10\\b/.test(document.querySelector('.essw-explorer .essw-summary')"
        "?.textContent || '')",
        timeout=30_000,
    )
    assert summary.inner_text() != before
    split_slider = explorer.locator(".widget-slider").filter(has_text="split")
    assert split_slider.locator(".widget-readout").inner_text().strip() == "10"
    page.wait_for_timeout(1000)  # let vega finish redrawing
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "voila.png"), full_page=True)
    _check_clean(page)
    context.close()


def test_explorer_in_notebook7(notebook7, browser, only_local):
    context, page = _new_page(browser, only_local)
    page.goto(f"{notebook7.url}/notebooks/{NOTEBOOK}?token={notebook7.token}")
    panel = page.locator(".jp-NotebookPanel")
    panel.wait_for(timeout=60_000)
    _wait_kernel_connected(page, notebook7)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
        timeout=60_000
    )
    page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
    page.locator("li[data-command='runmenu:run-all']").click()
    # the first code cell is queued or ran: "[*]:" or "[1]:"
    panel.locator(".jp-CodeCell .jp-InputPrompt").filter(
        has_text=re.compile(r"\[[*\d]")
    ).first.wait_for(timeout=15_000)
    explorer = _wait_for_explorer(page, panel, notebook7, "notebook7_failure.png")
    # Run All went through to the last cell (offline it prints a note)
    panel.locator(".jp-OutputArea-output").filter(has_text="falcon-mamba-7b").wait_for(
        timeout=60_000
    )
    _check_shown_matches_printed(explorer, panel)
    ARTIFACTS.mkdir(exist_ok=True)
    explorer.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "notebook7.png"))
    _check_clean(page)
    context.close()
