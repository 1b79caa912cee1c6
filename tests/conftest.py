"""Shared test settings: no model hub, and the `slow` marker."""

import os
from pathlib import Path

import pytest

# Hub ids must fail at once instead of retrying the network (ENVIRONMENT notes: ~46 s).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: loads the built-in pretrained model smollm2-135m (about 10 s); "
        "part of the normal run, deselect with -m 'not slow'",
    )


# --- a real browser: Debian's Chromium driven by playwright (its own download fails here) ---
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _browser_unavailable(reason: str):
    # CI installs Chromium (make test): there a missing browser is a failure, not a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module."""
    if not CHROMIUM.exists():
        _browser_unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _browser_unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
