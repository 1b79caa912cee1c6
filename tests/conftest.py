"""Shared test settings: no model hub, the `slow` marker, a browser and Jupyter servers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def _unavailable(reason: str):
    # CI installs Chromium and the test extra (make test): there a missing tool fails.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    """`require("voila", "voila>=0.5")`: import a test-extra module, or skip (fail under CI)."""

    def check(module: str, requirement: str) -> None:
        try:
            __import__(module)
        except ImportError:
            _unavailable(f"{module} is not installed (pip install '{requirement}'; test extra)")

    return check


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module."""
    if not CHROMIUM.exists():
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


# --- Jupyter servers on 127.0.0.1 for the browser tests, with every user dir in a temp dir ---
# Each browser test blocks every request that does not go to 127.0.0.1 (only_local).
LOCAL_PREFIXES = ("http://127.0.0.1", "ws://127.0.0.1", "file://", "data:", "blob:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def only_local():
    """`page.route("**/*", only_local(blocked))`: lets local requests through, aborts the rest
    and appends their URLs to `blocked`."""

    def make(blocked: list):
        def route(r):
            url = r.request.url
            if url.startswith(LOCAL_PREFIXES):
                r.continue_()
            else:
                blocked.append(url)
                r.abort()

        return route

    return make


class JupyterServer:
    """One Jupyter process (JupyterLab, Notebook 7, Voila) in its own process group.

    Config, data, runtime, settings, workspaces and IPython dirs live under `base`; `root`
    holds the notebooks served. The news pop-up is disabled and notebooks render every cell
    (no windowing), so a whole output is in the DOM. Set up files, then `start(argv)`.
    """

    def __init__(self, base: Path, name: str):
        self.base, self.name = base, name
        self.root = base / "notebooks"
        self.config, self.settings = base / "config", base / "settings"
        self.log = base / "server.log"
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        for d in (
            self.root,
            self.config / "labconfig",
            base / "workspaces",
            base / "data",
            base / "runtime",
        ):
            d.mkdir(parents=True)
        (self.config / "labconfig" / "page_config.json").write_text(
            json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
            )
        )
        tracker = self.settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))

    @property
    def env(self) -> dict:
        return dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(self.config),
            JUPYTER_DATA_DIR=str(self.base / "data"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            IPYTHONDIR=str(self.base / "ipython"),
            HF_HUB_OFFLINE="1",
            OMP_NUM_THREADS="1",
        )

    def start(self, argv: list[str], timeout: float = 60) -> JupyterServer:
        """Run `python -m ARGV...` (the caller passes `--port` etc.); wait for the port."""
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends kernels too
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.3)
        tail = self.log.read_text()[-3000:]
        pytest.fail(f"{self.name} did not start in {timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        """SIGTERM to the process group (server and kernels), SIGKILL after 15 s."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break  # the group is gone
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                time.sleep(0.5)  # the server shuts its kernels down; then sweep the group
        self.proc.wait()


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory):
    """Factory: `jupyter_server("lab", notebook=path)` -> a JupyterServer with isolated dirs
    serving a copy of `path`, not yet started. Every server it made is stopped (process group)
    at the end of the module."""
    servers: list[JupyterServer] = []

    def make(name: str, notebook: Path | None = None) -> JupyterServer:
        server = JupyterServer(tmp_path_factory.mktemp(name), name)
        if notebook is not None:  # serve a copy: runs must not write into the repository
            shutil.copy(notebook, server.root / notebook.name)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def two_threads():
    """torch with two intra-op threads for the test (the split workers' thread rules)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def solves(monkeypatch):
    """``solves("eigvalsh")`` wraps ``torch.linalg.eigvalsh`` for the test and returns the
    list that each call appends its input's shape to (work counted, not timed)."""
    import torch

    def watch(name: str) -> list:
        seen, original = [], getattr(torch.linalg, name)

        def counting(x, *args, **kwargs):
            seen.append(tuple(x.shape))
            return original(x, *args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, counting)
        return seen

    return watch
