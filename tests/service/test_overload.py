"""Many clients at once against a small queue: 202 or a fast 429, never a 5xx."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service.conftest import hold_worker, wait_job

THREADS = 32


def _burst(base: str, bodies: list[dict]) -> list[tuple[int, dict, float, dict]]:
    """POST every body to /api/v1/generate from THREADS threads that start together;
    `(status, headers, seconds, json)` of each response."""
    barrier = threading.Barrier(THREADS)
    local = threading.local()

    def one(body):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base, timeout=30)
            barrier.wait(30)
        start = time.monotonic()
        r = client.post("/api/v1/generate", json=body)
        return r.status_code, dict(r.headers), time.monotonic() - start, r.json()

    with ThreadPoolExecutor(THREADS) as pool:
        # The first THREADS bodies go one per thread (each opens its client, then all wait on the barrier).
        return list(pool.map(one, bodies))


def _check(results, fast: bool = True):
    for status, headers, seconds, body in results:
        assert status in (202, 429), (status, body)
        if status == 429:
            assert int(headers["retry-after"]) > 0
            if fast:
                assert seconds < 2.0, f"a 429 took {seconds:.2f} s"


def test_a_burst_against_a_full_queue(live_server, monkeypatch):
    """The queue check and the insert are one step: with the checks slowed down (a wider
    window for two requests to pass them together), the limit and de-duplication still
    hold exactly."""
    from noise2art.store import Store

    count, find = Store.count_pending, Store.find_duplicate

    def slow_count(self, owner=None):
        n = count(self, owner)
        time.sleep(0.005)
        return n

    def slow_find(self, request_key, owner):
        row = find(self, request_key, owner)
        time.sleep(0.005)
        return row

    monkeypatch.setattr(Store, "count_pending", slow_count)
    monkeypatch.setattr(Store, "find_duplicate", slow_find)
    base, app = live_server(max_pending=4, max_pending_per_user=4)
    bodies = [{"prompt": "a red ball", "steps": 2, "seeds": [k]} for k in range(THREADS)]
    with hold_worker(app, timeout=60):  # nothing finishes during the bursts
        results = _burst(base, bodies)
        _check(results, fast=False)  # slowed down on purpose; see the next test
        accepted = [r for r in results if r[0] == 202]
        assert len(accepted) == 4, f"{len(accepted)} jobs accepted with max_pending=4"
        assert app.state.store.count_pending() == 4
        accepted_ids = {r[3]["job_id"] for r in accepted}
        first = next(b for b, r in zip(bodies, results) if r[0] == 202)
        # Identical requests at once are one job: the queued one.
        same = _burst(base, [first] * THREADS)
        _check(same, fast=False)
        assert {r[0] for r in same} == {202}
        assert {r[3]["job_id"] for r in same} <= accepted_ids and len({r[3]["job_id"] for r in same}) == 1
        assert all(r[3]["deduplicated"] for r in same)
    with httpx.Client(base_url=base, timeout=30) as client:
        for job_id in accepted_ids:
            assert wait_job(client, job_id)["status"] == "completed"
        # Identical new requests at once, with room in the queue: still one job.
        same = _burst(base, [{"prompt": "a dog", "steps": 2, "seeds": [1]}] * THREADS)
        assert {r[0] for r in same} == {202}
        assert len({r[3]["job_id"] for r in same}) == 1
        assert sum(not r[3]["deduplicated"] for r in same) == 1


def test_a_burst_while_the_worker_runs(live_server):
    base, app = live_server(max_pending=3)
    bodies = [{"prompt": "a blue cube", "steps": 4, "seeds": [k]} for k in range(THREADS * 2)]
    results = _burst(base, bodies)
    _check(results)
    accepted = {r[3]["job_id"] for r in results if r[0] == 202}
    assert accepted and any(r[0] == 429 for r in results)
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/api/v1/health").status_code == 200
        for job_id in accepted:
            assert wait_job(client, job_id, timeout=60)["status"] == "completed"
        assert app.state.store.count_pending() == 0
        assert client.post("/api/v1/generate", json=bodies[-1]).status_code == 202
