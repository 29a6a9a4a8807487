"""Fixtures of the web app's tests: a live server on the tiny model, and Chromium (Playwright).

The browser tests need a `chromium` executable on PATH (the distribution's package: `.ci/run`
installs it with apt) and the `playwright` Python package; without either they are skipped.
Playwright's own browser download is never used.
"""

from __future__ import annotations

import shutil
import threading

import pytest

from tests.service.conftest import client, free_port, make_app, make_client, wait_for  # noqa: F401 (fixtures)

BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
# The probes of APIs that are not on every server (Explore, Feed): their 404 is expected.


def chromium_executable() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class LiveServer:
    def __init__(self, app, port: int):
        import uvicorn

        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "uvicorn to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory, tiny_model):
    """`start_server(**config)`: uvicorn serving a fresh app (its own data folder) on a free port."""
    from noise2art.service.app import create_app
    from noise2art.service.config import ServiceConfig

    servers: list[LiveServer] = []

    def start(**overrides) -> LiveServer:
        port = free_port()
        data = tmp_path_factory.mktemp("web-data")
        app = create_app(ServiceConfig(data=data, port=port, **overrides), model=tiny_model)
        servers.append(LiveServer(app, port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> LiveServer:
    """One open (loopback, no token) server shared by the browser tests."""
    return start_server()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need `pip install playwright`")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium executable on PATH: install the distribution's chromium (apt-get install "
                    "chromium) to run the browser tests; .ci/run does")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield browser
        browser.close()


def _unexpected(message) -> bool:
    return message.type == "error"


@pytest.fixture
def page(browser, server):
    """A fresh browser context and page; `page.errors` collects console errors and uncaught
    exceptions (an expected 404 of an optional API aside). Each test ends asserting none."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, reduced_motion="reduce")
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text} @ {(m.location or {}).get('url')}")
            if _unexpected(m) else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.errors = errors
    yield page
    context.close()
    # Prefetched pages a test left queued would only slow down the next test.
    _cancel_pending(server)
    assert not errors, errors


def _cancel_pending(server) -> None:
    store, worker = server.app.state.store, server.app.state.worker
    for job in store.list_jobs("", 500):
        if job["status"] in ("queued", "running"):
            worker.cancel(job["id"])
