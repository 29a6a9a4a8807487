"""Fixtures of the service tests: apps on the tiny random model, in-process or on a port."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time

import pytest

FINAL = ("completed", "failed", "canceled", "interrupted")
BASE_URL = "http://localhost:8000"


def wait_job(client, job_id: str, timeout: float = 20.0, until=FINAL, headers=None) -> dict:
    """Poll `GET /api/v1/jobs/{id}` until its status is in `until`; the job's JSON."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.01)


def wait_for(predicate, timeout: float = 20.0, what: str = "a condition"):
    """Poll `predicate()` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def hold_worker(app, timeout: float = 20.0):
    """Block the app's worker thread (a `call` that waits) until the block exits, so jobs
    posted meanwhile stay queued and the worker then sees them all at once."""
    entered, release = threading.Event(), threading.Event()

    def block():
        entered.set()
        release.wait(timeout)

    future = app.state.worker.call(block)
    assert entered.wait(timeout), "the worker did not pick up the blocking call"
    try:
        yield
    finally:
        release.set()
        future.result(timeout)


def post_job(client, body: dict, path: str = "/api/v1/generate", headers=None) -> str:
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def sse_events(text_or_lines) -> list[dict]:
    """Parse Server-Sent Events (an iterable of lines or one text) into dicts id/event/data."""
    import json

    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else text_or_lines
    out, current = [], {}
    for line in lines:
        if not line:
            if "event" in current:
                out.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "id":
            current["id"] = int(value)
        elif key == "event":
            current["event"] = value
        elif key == "data":
            current["data"] = json.loads(value)
    if "event" in current:
        out.append(current)
    return out


@pytest.fixture
def make_app(tmp_path, tiny_model):
    """`make_app(**config_overrides)`: an app on the tiny model with its own data folder."""
    from noise2art.service.app import create_app
    from noise2art.service.config import ServiceConfig

    counter = itertools.count()

    def make(**overrides):
        data = overrides.pop("data", None) or tmp_path / f"data{next(counter)}"
        return create_app(ServiceConfig(data=data, **overrides), model=tiny_model)

    return make


@pytest.fixture
def make_client(make_app):
    """`make_client(**config_overrides)`: a started TestClient (lifespan: store, worker)."""
    from fastapi.testclient import TestClient

    with contextlib.ExitStack() as stack:

        def make(**overrides):
            app = make_app(**overrides)
            return stack.enter_context(TestClient(app, base_url=BASE_URL))

        yield make


@pytest.fixture
def client(make_client):
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(make_app):
    """`live_server(**config_overrides)`: uvicorn serving a fresh app on a free loopback
    port, in a thread; returns `(base_url, app)`. Stopped after the test."""
    import uvicorn

    servers = []

    def start(**overrides):
        port = free_port()
        app = make_app(port=port, **overrides)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, 20, "uvicorn to start")
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def fast_password_hashing(monkeypatch):
    """Argon2 with tiny costs (hashes still verify with their own parameters)."""
    from argon2 import PasswordHasher

    from noise2art.service import security

    monkeypatch.setattr(security, "password_hasher",
                        lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def unet_calls(tiny_model):
    """The batch sizes of every call of the tiny model's UNet (its own, fp32, as
    `precision: "model"` runs it), in order, as `(monotonic time, batch)`."""
    calls: list[tuple[float, int]] = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        calls.append((time.monotonic(), int(sample.shape[0])))

    handle = tiny_model.unet.register_forward_pre_hook(hook, with_kwargs=True)
    yield calls
    handle.remove()
