"""The REST API in-process, on the tiny random model: every endpoint, its errors, and what
the worker does with the jobs (batching, priority, cancel, failures)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.service.conftest import hold_worker, post_job, sse_events, wait_for, wait_job

# fp32 ("model"): the tiny model's own UNet, faster on a CPU than bf16 ("auto" there).
GEN = {"prompt": "a red ball", "steps": 2, "precision": "model"}


def generate(client, **fields) -> dict:
    """Post a generate job (a field given as None is left out) and wait for it; the finished job."""
    body = {k: v for k, v in {**GEN, **fields}.items() if v is not None}
    job = wait_job(client, post_job(client, body))
    assert job["status"] == "completed", job
    return job


def job_count(client) -> int:
    return client.app.state.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def error_fields(response) -> list:
    return [e["loc"][-1] if e["loc"] else None for e in response.json()["detail"]]


# --------------------------------------------------------------------------- health, generate


def test_health(client, tiny_model):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == tiny_model.model_id
    assert body["queued"] == 0 and body["users"] is False


def test_generate_stores_images_with_what_fixes_them(client):
    r = client.post("/api/v1/generate", json={**GEN, "seeds": [3, 1, 2]})
    assert r.status_code == 202
    created = r.json()
    assert created["status"] == "queued" and created["deduplicated"] is False
    assert r.headers["location"] == f"/api/v1/jobs/{created['job_id']}"
    job = wait_job(client, created["job_id"])
    assert job["status"] == "completed" and job["progress"] == 1.0 and job["error"] is None
    ids = job["result"]["image_ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    rows = [client.get(f"/api/v1/images/{i}").json() for i in ids]
    assert sorted(r["seed"] for r in rows) == [1, 2, 3]
    for row in rows:
        assert row["prompt"] == "a red ball" and row["negative"] == ""
        assert row["steps"] == 2 and row["guidance"] == 7.5 and row["scheduler"] == "default"
        assert (row["width"], row["height"]) == (32, 32)
        assert row["precision"] == "model"
        assert row["embedding_id"] == job["result"]["embedding_id"]
        assert row["job_id"] == job["id"] and row["method"] == "generate"
        assert row["url"] == f"/api/v1/images/{row['id']}.png"
        assert "Seed: %d" % row["seed"] in row["parameters"] and "Steps: 2" in row["parameters"]
    emb = client.get(f"/api/v1/embeddings/{job['result']['embedding_id']}").json()
    assert emb["prompt"] == "a red ball" and emb["source"] == "prompt"


def test_png_headers_and_conditional_get(client):
    job = generate(client, seeds=[4])
    image_id = job["result"]["image_ids"][0]
    r = client.get(f"/api/v1/images/{image_id}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    etag = r.headers["etag"]
    assert etag == '"%s"' % hashlib.sha256(r.content).hexdigest()
    assert "immutable" in r.headers["cache-control"] and "max-age=31536000" in r.headers["cache-control"]
    assert r.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"/api/v1/images/{image_id}.png", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get(f"/api/v1/images/{image_id}.png", headers={"If-None-Match": '"0123"'})
    assert other.status_code == 200 and other.content == r.content


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _regenerate(tiny_model, row: dict, seeds: list[int]) -> list[np.ndarray]:
    scheduler = None if row["scheduler"] == "default" else row["scheduler"]
    images = tiny_model.generate(row["prompt"], seeds, row["negative"], steps=row["steps"], guidance=row["guidance"],
                                 scheduler=scheduler, width=row["width"], height=row["height"],
                                 precision=row["precision"])
    return [np.asarray(im.convert("RGB")).astype(np.int16) for im in images]


@pytest.mark.parametrize("fields", [
    {"seeds": [7], "precision": None},  # "auto": recorded as what it resolved to
    {"seeds": [8]},
    {"seeds": [11], "scheduler": "euler", "guidance": 4.0, "width": 24, "height": 16, "negative": "blue"},
])
def test_png_metadata_reproduces_a_single_seed_job_exactly(client, tiny_model, fields):
    job = generate(client, **fields)
    row = client.get(f"/api/v1/images/{job['result']['image_ids'][0]}").json()
    png = client.get(row["url"]).content
    meta = json.loads(Image.open(io.BytesIO(png)).text["noise2art"])
    for key in ("seed", "steps", "guidance", "width", "height", "precision", "prompt", "negative"):
        assert meta[key] == row[key], key
    assert meta["scheduler"] == row["scheduler"] == fields.get("scheduler", "default")
    assert meta["batch_seeds"] == [row["seed"]]
    # Alone in its UNet batch, the job ran exactly what `generate` runs with the same settings.
    if "precision" in fields:
        from noise2art.engine.devices import resolve_precision

        auto = resolve_precision(tiny_model.device, tiny_model.dtype, "auto")
        assert row["precision"] == ("model" if auto == tiny_model.dtype else "bf16")
    [ref] = _regenerate(tiny_model, row, [row["seed"]])
    assert np.array_equal(_pixels(png), ref)


def test_png_metadata_reproduces_a_batched_image(client, tiny_model):
    """Three seeds shared one UNet batch. The same batch again is bit-identical; one seed
    alone runs a different batch shape, whose float kernels may round differently, so it
    may differ by at most one level of 255 (rounding of nearly equal floats)."""
    job = generate(client, seeds=[5, 6, 7])
    rows = [client.get(f"/api/v1/images/{i}").json() for i in job["result"]["image_ids"]]
    pngs = {r["seed"]: _pixels(client.get(r["url"]).content) for r in rows}
    meta = json.loads(Image.open(io.BytesIO(client.get(rows[0]["url"]).content)).text["noise2art"])
    assert meta["batch_seeds"] == [5, 6, 7]
    batch = _regenerate(tiny_model, rows[0], meta["batch_seeds"])
    for seed, ref in zip(meta["batch_seeds"], batch):
        assert np.array_equal(pngs[seed], ref), seed
    for row in rows:
        [alone] = _regenerate(tiny_model, row, [row["seed"]])
        assert np.abs(pngs[row["seed"]] - alone).max() <= 1, row["seed"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("body, field", [
    ({**GEN, "width": 33}, "width"),
    ({**GEN, "height": 7}, "height"),
    ({**GEN, "scheduler": "no-such-sampler"}, "scheduler"),
    ({**GEN, "seeds": [1, 2, 3, 4, 5]}, "seeds"),
    ({**GEN, "seeds": [1, 2, 1]}, "seeds"),
    ({**GEN, "seeds": []}, "seeds"),
    ({**GEN, "seeds": [-1]}, 0),
    ({**GEN, "steps": 0}, "steps"),
    ({**GEN, "embedding_id": "0123456789abcdef"}, "prompt"),
    ({"embedding_id": "0123456789abcdef", "steps": 2}, "embedding_id"),
    ({"embedding_id": "not-an-id", "steps": 2}, "embedding_id"),
    ({**GEN, "bogus": 1}, "bogus"),
    ({**GEN, "priority": "urgent"}, "priority"),
    ({"prompt": "   "}, "prompt"),
    ({"steps": 2}, "prompt"),
])
def test_generate_validation_is_422_naming_the_field_and_queues_nothing(make_client, body, field):
    client = make_client(max_seeds=4)
    r = client.post("/api/v1/generate", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    named = [e["loc"][-1] for e in detail if e["loc"]] + [e["msg"] for e in detail]
    assert any(field == n or (isinstance(n, str) and isinstance(field, str) and field in n) for n in named), detail
    assert job_count(client) == 0
    assert client.get("/api/v1/jobs").json()["jobs"] == []


def test_generate_over_the_pixel_budget_is_422(make_client):
    client = make_client(max_pixels=32 * 32 * 2)
    r = client.post("/api/v1/generate", json={**GEN, "seeds": [1, 2, 3]})
    assert r.status_code == 422 and error_fields(r) == ["seeds"]
    assert job_count(client) == 0


def test_malformed_json_is_422(client):
    r = client.post("/api/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert job_count(client) == 0


# --------------------------------------------------------------------------- de-duplication, priority, limits


def test_the_same_request_twice_is_one_job(client):
    first = client.post("/api/v1/generate", json={**GEN, "seeds": [9]}).json()
    second = client.post("/api/v1/generate", json={**GEN, "seeds": [9]})
    assert second.status_code == 202
    assert second.json()["job_id"] == first["job_id"] and second.json()["deduplicated"] is True
    wait_job(client, first["job_id"])
    # Also once completed, and whatever its priority.
    third = client.post("/api/v1/generate", json={**GEN, "seeds": [9], "priority": "prefetch"}).json()
    assert third == {"job_id": first["job_id"], "status": "completed", "deduplicated": True}
    different = client.post("/api/v1/generate", json={**GEN, "seeds": [10]}).json()
    assert different["job_id"] != first["job_id"] and different["deduplicated"] is False
    assert job_count(client) == 2


def test_interactive_runs_before_prefetch(client):
    # Different steps, so the two never share a batch; both are queued when the worker looks.
    with hold_worker(client.app):
        prefetch = post_job(client, {**GEN, "steps": 3, "priority": "prefetch"})
        interactive = post_job(client, {**GEN, "steps": 2, "seeds": [1]})
    a, b = wait_job(client, interactive), wait_job(client, prefetch)
    assert a["status"] == b["status"] == "completed"
    assert a["finished"] < b["finished"]
    events = client.app.state.store.events_after(0)
    done_a = next(e["id"] for e in events if e["type"] == "job.completed" and e["job_id"] == interactive)
    first_b = next(e["id"] for e in events if e["type"] == "job.image" and e["job_id"] == prefetch)
    assert done_a < first_b


def test_compatible_jobs_share_unet_calls_and_incompatible_ones_do_not(client, unet_calls):
    base = {"steps": 2, "precision": "model", "guidance": 7.5}
    generate(client, **base, prompt="a red ball", seeds=[1])
    alone = [b for _, b in unet_calls]
    assert alone and len(set(alone)) == 1
    single = alone[0]  # one sample (guidance doubles it)

    unet_calls.clear()
    with hold_worker(client.app):
        j1 = post_job(client, {**base, "prompt": "a blue cube", "seeds": [2]})
        j2 = post_job(client, {**base, "prompt": "a cat", "seeds": [3]})
    assert wait_job(client, j1)["status"] == wait_job(client, j2)["status"] == "completed"
    assert [b for _, b in unet_calls] == [2 * single] * len(alone)
    png = client.get(client.get(f"/api/v1/images/{wait_job(client, j1)['result']['image_ids'][0]}").json()["url"])
    assert json.loads(Image.open(io.BytesIO(png.content)).text["noise2art"])["batch_seeds"] == [2, 3]

    unet_calls.clear()
    with hold_worker(client.app):
        j3 = post_job(client, {**base, "prompt": "a blue cube", "seeds": [4]})
        j4 = post_job(client, {**base, "steps": 3, "prompt": "a cat", "seeds": [5]})
    assert wait_job(client, j3)["status"] == wait_job(client, j4)["status"] == "completed"
    sizes = [b for _, b in unet_calls]
    assert sizes and set(sizes) == {single}


def test_max_batch_splits_a_large_job(make_client, unet_calls):
    client = make_client(max_batch=2)
    job = generate(client, seeds=[1, 2, 3], precision="model")
    assert len(job["result"]["image_ids"]) == 3
    sizes = sorted({b for _, b in unet_calls})
    assert len(sizes) == 2 and sizes[1] == 2 * sizes[0]


def test_queue_full_is_a_fast_429_with_retry_after(make_client):
    client = make_client(max_pending=2)
    with hold_worker(client.app):
        post_job(client, {**GEN, "seeds": [1]})
        post_job(client, {**GEN, "seeds": [2]})
        start = time.monotonic()
        r = client.post("/api/v1/generate", json={**GEN, "seeds": [3]})
        assert time.monotonic() - start < 2.0
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert job_count(client) == 2
        # A duplicate of a queued job is still answered (it adds nothing to the queue).
        assert client.post("/api/v1/generate", json={**GEN, "seeds": [1]}).json()["deduplicated"] is True
        assert client.get("/api/v1/health").json()["queued"] == 2
    for job in client.get("/api/v1/jobs").json()["jobs"]:
        assert wait_job(client, job["id"])["status"] == "completed"
    assert client.post("/api/v1/generate", json={**GEN, "seeds": [3]}).status_code == 202


def test_per_user_limit_is_429_for_that_user_only(make_client, fast_password_hashing):
    from noise2art.service.security import hash_password

    client = make_client(max_pending=10, max_pending_per_user=1)
    store = client.app.state.store
    tokens = {}
    for name in ("alice", "bob"):
        store.add_user(name, hash_password(f"{name}-password"))
        r = client.post("/api/v1/login", json={"name": name, "password": f"{name}-password"})
        tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}
    client.cookies.clear()
    with hold_worker(client.app):
        post_job(client, {**GEN, "seeds": [1]}, headers=tokens["alice"])
        r = client.post("/api/v1/generate", json={**GEN, "seeds": [2]}, headers=tokens["alice"])
        assert r.status_code == 429 and "retry-after" in r.headers
        post_job(client, {**GEN, "seeds": [2]}, headers=tokens["bob"])


# --------------------------------------------------------------------------- cancel and failures


def test_cancel_a_queued_job_it_never_runs(client):
    with hold_worker(client.app):
        job_id = post_job(client, {**GEN, "seeds": [1, 2]})
        r = client.delete(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "canceled" and r.json()["id"] == job_id
    later = generate(client, seeds=[3])  # the worker has looked at the queue since
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["started"] is None and job["error"]
    types = [e["type"] for e in client.app.state.store.events_after(0, job_id=job_id)]
    assert types == ["job.queued", "job.canceled"]
    library = client.get("/api/v1/library").json()["images"]
    assert [i["job_id"] for i in library] == [later["id"]]
    # Canceling a finished job changes nothing.
    again = client.delete(f"/api/v1/jobs/{later['id']}")
    assert again.status_code == 200 and again.json()["status"] == "completed"


def test_cancel_a_running_job_stops_within_a_step(client, unet_calls):
    job_id = post_job(client, {**GEN, "steps": 200, "seeds": [1, 2, 3, 4], "precision": "model"})
    wait_for(lambda: len(unet_calls) >= 3, 20, "the job to run a few steps")
    big = unet_calls[0][1]
    r = client.delete(f"/api/v1/jobs/{job_id}")
    canceled_at = time.monotonic()
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    after = generate(client, seeds=[9], precision="model")  # runs once the worker let go of the canceled one
    assert time.monotonic() - canceled_at < 10
    late = [t for t, b in unet_calls if t > canceled_at and b == big]
    assert len(late) <= 1, f"{len(late)} UNet calls of the canceled job after the cancel"
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled"
    assert sum(1 for _, b in unet_calls if b == big) < 200
    assert client.app.state.store.db.execute("SELECT COUNT(*) FROM images WHERE job_id = ?",
                                             (job_id,)).fetchone()[0] == 0
    types = [e["type"] for e in client.app.state.store.events_after(0, job_id=job_id)]
    assert "job.canceled" in types and "job.completed" not in types and "job.image" not in types
    assert len(after["result"]["image_ids"]) == 1


def _nan_decode(latents_shape_filter):
    def fake(vae, latents):
        n, _, h, w = latents.shape
        if latents_shape_filter(n):
            return torch.full((n, 3, 2 * h, 2 * w), float("nan"))
        return (vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)

    return fake


def test_a_failing_job_is_failed_with_a_reason_and_the_next_completes(client, tiny_model, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(tiny_model, "_vae_decode", _nan_decode(lambda n: True))
        failed = wait_job(client, post_job(client, {**GEN, "seeds": [1]}))
    assert failed["status"] == "failed" and "NaN" in failed["error"]
    assert failed["result"] is None
    types = [e["type"] for e in client.app.state.store.events_after(0, job_id=failed["id"])]
    assert types[-1] == "job.failed" and "job.image" not in types
    assert client.get("/api/v1/library").json()["images"] == []
    ok = generate(client, seeds=[2])
    assert len(ok["result"]["image_ids"]) == 1
    # A failed job is not a duplicate: the same request queues a new job.
    retry = client.post("/api/v1/generate", json={**GEN, "seeds": [1]}).json()
    assert retry["job_id"] != failed["id"] and retry["deduplicated"] is False


def test_a_failing_batch_is_retried_job_by_job(client, tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model, "_vae_decode", _nan_decode(lambda n: n > 1))
    with hold_worker(client.app):
        j1 = post_job(client, {**GEN, "seeds": [1]})
        j2 = post_job(client, {**GEN, "prompt": "a cat", "seeds": [2]})
    assert wait_job(client, j1)["status"] == "completed"
    assert wait_job(client, j2)["status"] == "completed"


# --------------------------------------------------------------------------- jobs and ids


def test_jobs_list_and_get(client):
    a = generate(client, seeds=[1])
    b = generate(client, seeds=[2])
    jobs = client.get("/api/v1/jobs").json()["jobs"]
    assert [j["id"] for j in jobs] == [b["id"], a["id"]]  # newest first
    assert client.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]["id"] == b["id"]
    assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422
    got = client.get(f"/api/v1/jobs/{a['id']}").json()
    assert got["kind"] == "generate" and got["result"]["image_ids"] == a["result"]["image_ids"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/jobs/{}"), ("DELETE", "/api/v1/jobs/{}"), ("GET", "/api/v1/jobs/{}/events"),
    ("GET", "/api/v1/images/{}"), ("GET", "/api/v1/images/{}.png"), ("PUT", "/api/v1/images/{}/like"),
    ("DELETE", "/api/v1/images/{}/like"), ("GET", "/api/v1/embeddings/{}"),
    ("GET", "/api/v1/embeddings/{}.safetensors"), ("GET", "/api/v1/artifacts/{}"),
])
def test_unknown_ids_are_404_and_malformed_ids_422(client, method, path):
    r = client.request(method, path.format("0123456789abcdef"))
    assert r.status_code == 404, r.text
    for bad in ("xyz", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcdef0", "%2e%2e"):
        r = client.request(method, path.format(bad))
        assert r.status_code in (404, 422) and r.status_code < 500, (bad, r.status_code)
        if bad != "%2e%2e":
            assert r.status_code == 422, (bad, r.text)


# --------------------------------------------------------------------------- events


def test_job_events_in_order_and_resumable(client):
    job = generate(client, seeds=[1, 2])
    r = client.get(f"/api/v1/jobs/{job['id']}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    types = [e["event"] for e in events]
    assert types[:2] == ["job.queued", "job.started"] and types[-1] == "job.completed"
    assert "job.progress" in types and types.count("job.image") == 2
    assert types.index("job.started") < types.index("job.progress") < types.index("job.image")
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["data"]["job_id"] == job["id"] for e in events)
    images = [e["data"]["image_id"] for e in events if e["event"] == "job.image"]
    assert sorted(images) == sorted(job["result"]["image_ids"])
    assert events[-1]["data"]["result"]["image_ids"] == job["result"]["image_ids"]

    seen = events[1]["id"]
    by_header = sse_events(client.get(f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(seen)}).text)
    assert [e["id"] for e in by_header] == ids[2:]
    by_query = sse_events(client.get(f"/api/v1/jobs/{job['id']}/events", params={"last_event_id": seen}).text)
    assert [e["id"] for e in by_query] == ids[2:]
    assert sse_events(client.get(f"/api/v1/jobs/{job['id']}/events",
                                 headers={"Last-Event-ID": str(ids[-1])}).text) == []
    bad = client.get(f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "seven"})
    assert bad.status_code == 422


def test_job_events_of_a_running_job_end_when_it_ends(client):
    job_id = post_job(client, {**GEN, "steps": 30, "seeds": [1]})
    events = sse_events(client.get(f"/api/v1/jobs/{job_id}/events").text)
    assert events[-1]["event"] == "job.completed"
    assert wait_job(client, job_id)["status"] == "completed"


def test_all_events_stream_sees_every_job_of_the_caller(live_server):
    import httpx

    base, app = live_server()
    with httpx.Client(base_url=base, timeout=20) as http:
        j1 = post_job(http, {**GEN, "seeds": [1]})
        j2 = post_job(http, {**GEN, "prompt": "a cat", "seeds": [2]})
        completed, events = set(), []
        deadline = time.monotonic() + 20
        with http.stream("GET", "/api/v1/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if line == "":
                    events = sse_events(lines)
                    completed = {e["data"]["job_id"] for e in events if e["event"] == "job.completed"}
                if completed >= {j1, j2} or len(lines) > 500 or time.monotonic() > deadline:
                    break
        assert completed == {j1, j2}
        ids = [e["id"] for e in events]
        assert ids == sorted(ids)
        # Resuming after the first job's completion skips everything up to there.
        cut = next(e["id"] for e in events if e["event"] == "job.completed")
        with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": str(cut)}) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if line == "" and any(e["event"] == "job.completed" for e in sse_events(lines)):
                    break
        resumed = sse_events(lines)
        assert resumed and all(e["id"] > cut for e in resumed)
        assert [e["id"] for e in resumed] == [i for i in ids if i > cut][:len(resumed)]


def test_event_streams_wake_on_the_bell_not_the_timer(live_server, monkeypatch):
    """Events reach an open stream when they are stored: with the fallback timer at ten
    minutes, a job's stream still delivers every event and ends (the read would time out)."""
    import httpx

    from noise2art.service.routes import api

    monkeypatch.setattr(api, "EVENT_POLL_S", 600.0)
    base, app = live_server()
    with httpx.Client(base_url=base, timeout=20) as http:
        job_id = post_job(http, {**GEN, "steps": 6, "seeds": [1, 2]})
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
            events = sse_events(list(r.iter_lines()))
    types = [e["event"] for e in events]
    assert types[-1] == "job.completed" and types.count("job.image") == 2


def test_event_bell_wakes_a_waiter_marked_before_the_ring():
    import asyncio
    import concurrent.futures

    from noise2art.service.bell import EventBell

    async def main():
        bell = EventBell(asyncio.get_running_loop())
        quiet = await bell.wait(bell.mark(), 0.01)
        mark = bell.mark()
        threading.Thread(target=bell.ring).start()  # rings from another thread, like the worker
        rang = await bell.wait(mark, 20)
        late = bell.mark()  # a mark taken after the ring waits for the next one
        return quiet, rang, late is not mark, await bell.wait(late, 0.01)

    # On a thread of its own: a browser test earlier in the session may leave a loop running here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: asyncio.run(main())).result(60) == (False, True, True, False)


# --------------------------------------------------------------------------- images, likes, library


def test_image_json_and_likes(client):
    job = generate(client, seeds=[1])
    image_id = job["result"]["image_ids"][0]
    row = client.get(f"/api/v1/images/{image_id}").json()
    assert row["liked"] is False and row["parameters"].startswith("a red ball\nSteps: 2")
    assert "parameters" not in row["extra"]
    r = client.put(f"/api/v1/images/{image_id}/like")
    assert r.status_code == 200 and r.json() == {"image_id": image_id, "liked": True}
    assert client.put(f"/api/v1/images/{image_id}/like").json()["liked"] is True  # idempotent
    assert client.get(f"/api/v1/images/{image_id}").json()["liked"] is True
    r = client.delete(f"/api/v1/images/{image_id}/like")
    assert r.status_code == 200 and r.json() == {"image_id": image_id, "liked": False}
    assert client.get(f"/api/v1/images/{image_id}").json()["liked"] is False


def test_library_pages_filters_and_cursor(client):
    seven = generate(client, seeds=list(range(7)))["result"]["image_ids"]
    cubes = generate(client, prompt="a blue cube", seeds=[1, 2])["result"]["image_ids"]
    pages, cursor = [], None
    for _ in range(3):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/library", params=params).json()
        pages.append([i["id"] for i in page["images"]])
        cursor = page["next_cursor"]
    assert [len(p) for p in pages] == [3, 3, 3] and cursor is None  # nine images: the third page is the last
    flat = [i for p in pages for i in p]
    assert len(set(flat)) == 9 and set(flat) == set(seven) | set(cubes)
    full = [i["id"] for i in client.get("/api/v1/library", params={"limit": 100}).json()["images"]]
    assert flat == full  # no gaps, no repeats, one order
    created = [client.get(f"/api/v1/images/{i}").json()["created"] for i in full]
    assert created == sorted(created, reverse=True)

    for i in (seven[0], cubes[1]):
        client.put(f"/api/v1/images/{i}/like")
    liked = client.get("/api/v1/library", params={"liked": "true"}).json()["images"]
    assert {i["id"] for i in liked} == {seven[0], cubes[1]} and all(i["liked"] for i in liked)
    not_liked = client.get("/api/v1/library", params={"liked": "false"}).json()["images"]
    assert len(not_liked) == 7 and not any(i["liked"] for i in not_liked)

    found = client.get("/api/v1/library", params={"q": "CUBE blue"}).json()["images"]
    assert {i["id"] for i in found} == set(cubes)
    assert client.get("/api/v1/library", params={"q": "ball%"}).json()["images"] == []
    assert client.get("/api/v1/library", params={"q": "cube", "liked": "true"}).json()["images"][0]["id"] == cubes[1]

    for junk in ("junk", "bm90IGpzb24", "WzEsIDJd", "!!!"):
        r = client.get("/api/v1/library", params={"cursor": junk})
        assert r.status_code == 422 and error_fields(r) == ["cursor"], junk


# --------------------------------------------------------------------------- embeddings


def _embedding_file(client, embedding_id):
    r = client.get(f"/api/v1/embeddings/{embedding_id}.safetensors")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert "attachment" in r.headers["content-disposition"]
    return r.content


def test_embeddings_from_a_prompt_and_a_blend(client, tiny_model):
    from noise2art.engine.embedding import PromptEmbedding
    from noise2art.methods.blend import blend_embeddings

    r = client.post("/api/v1/embeddings", json={"prompt": "a blue cube", "negative": "red"})
    assert r.status_code == 201
    cube = r.json()
    assert cube["source"] == "prompt" and cube["prompt"] == "a blue cube" and cube["negative"] == "red"
    assert cube["model_id"] == tiny_model.model_id and cube["url"] == f"/api/v1/embeddings/{cube['id']}.safetensors"
    assert client.get(f"/api/v1/embeddings/{cube['id']}").json() == cube
    data = _embedding_file(client, cube["id"])
    emb = PromptEmbedding.from_bytes(data, model_id=tiny_model.model_id, shape=tiny_model.embedding_shape)
    want = tiny_model.encode(["a blue cube"], "red")
    assert torch.equal(emb.cond, want.cond.float()) and torch.equal(emb.uncond, want.uncond.float())

    r = client.post("/api/v1/embeddings", json={"blend": [{"prompt": "a red ball", "weight": 0.25},
                                                          {"embedding_id": cube["id"], "weight": 0.75}]})
    assert r.status_code == 201
    blend = r.json()
    assert blend["source"] == "blend" and blend["id"] != cube["id"]
    got = PromptEmbedding.from_bytes(_embedding_file(client, blend["id"]))
    ref = blend_embeddings([tiny_model.encode(["a red ball"]), want], [0.25, 0.75], "x")
    assert torch.allclose(got.cond, ref.cond.float(), atol=1e-6)

    for body, field in (({"blend": [{"embedding_id": "0123456789abcdef", "weight": 1}]}, "blend"),
                        ({"prompt": "a", "blend": [{"prompt": "b", "weight": 1}]}, None),
                        ({}, None), ({"blend": []}, "blend")):
        r = client.post("/api/v1/embeddings", json=body)
        assert r.status_code == 422, body
        if field:
            assert field in error_fields(r) or any(field in str(e["loc"]) for e in r.json()["detail"])


def test_generate_from_an_embedding_id(client):
    cube = client.post("/api/v1/embeddings", json={"prompt": "a blue cube"}).json()
    job = wait_job(client, post_job(client, {"embedding_id": cube["id"], "steps": 2, "seeds": [3]}))
    assert job["status"] == "completed" and job["result"]["embedding_id"] == cube["id"]
    row = client.get(f"/api/v1/images/{job['result']['image_ids'][0]}").json()
    assert row["embedding_id"] == cube["id"] and row["prompt"] == "a blue cube" and row["seed"] == 3


def test_upload_embeddings(make_client, tiny_model):
    from noise2art.engine.embedding import PromptEmbedding

    client = make_client(max_upload_bytes=64 * 1024)
    good = tiny_model.encode(["a cat"], "dog").to_bytes()
    r = client.post("/api/v1/embeddings/upload", content=good, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    row = r.json()
    assert row["source"] == "upload" and row["prompt"] == "a cat" and row["negative"] == "dog"
    assert PromptEmbedding.from_bytes(_embedding_file(client, row["id"])).prompts == ["a cat"]
    job = wait_job(client, post_job(client, {"embedding_id": row["id"], "steps": 2}))
    assert job["status"] == "completed"

    base = tiny_model.encode(["a cat"])
    other_model = dataclasses.replace(base, model_id="someone/else").to_bytes()
    wrong_shape = PromptEmbedding(cond=torch.zeros(1, 77, 16), uncond=torch.zeros(1, 77, 16),
                                  mask=torch.ones(1, 77), model_id=tiny_model.model_id, prompts=["x"],
                                  negative=[""]).to_bytes()
    two = tiny_model.encode(["a cat", "a dog"]).to_bytes()
    buf = io.BytesIO()
    torch.save({"cond": base.cond}, buf)
    bad = {
        "junk": b"\x00junk bytes" * 10,
        "empty": b"",
        "pickle": pickle.dumps({"cond": [1.0, 2.0]}),
        "torch.save": buf.getvalue(),
        "other model": other_model,
        "wrong shape": wrong_shape,
        "two prompts": two,
        "truncated": good[: len(good) // 2],
    }
    before = client.app.state.store.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    for name, data in bad.items():
        r = client.post("/api/v1/embeddings/upload", content=data)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert error_fields(r) == ["embedding"], name
    big = b"\x00" * (64 * 1024 + 1)
    assert client.post("/api/v1/embeddings/upload", content=big).status_code == 413

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b"\x00" * 1024

    assert client.post("/api/v1/embeddings/upload", content=chunks()).status_code == 413
    after = client.app.state.store.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    assert after == before


# --------------------------------------------------------------------------- method jobs


def test_interpolate_job(client):
    job = wait_job(client, post_job(client, {"keyframes": [{"prompt": "a red ball"}, {"prompt": "a blue cube"}],
                                             "frames": 3, "steps": 2, "formats": ["gif"]}, "/api/v1/interpolate"))
    assert job["status"] == "completed", job
    result = job["result"]
    assert len(result["image_ids"]) == 3 and len(result["alphas"]) == 3
    frames = [client.get(f"/api/v1/images/{i}").json() for i in result["image_ids"]]
    assert all(f["method"] == "interpolate" and f["job_id"] == job["id"] for f in frames)
    r = client.get(f"/api/v1/artifacts/{result['artifact_ids']['gif']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content.startswith(b"GIF8")
    assert "immutable" in r.headers["cache-control"]
    assert client.get(f"/api/v1/artifacts/{result['artifact_ids']['gif']}",
                      headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    with Image.open(io.BytesIO(r.content)) as gif:
        assert gif.n_frames == 3
    # The speed profile: the image distance between consecutive frames, and max / mean.
    speed = result["speed"]
    assert result["constant_speed"] is False and len(speed["distances"]) == 2
    assert speed["ratio"] == pytest.approx(max(speed["distances"]) / (sum(speed["distances"]) / 2))


def test_interpolate_between_stored_images_starts_and_ends_on_them(client):
    def pixels(image_id):
        with Image.open(io.BytesIO(client.get(f"/api/v1/images/{image_id}.png").content)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)

    a = wait_job(client, post_job(client, {**GEN, "prompt": "a red ball", "seeds": [3]}))["result"]["image_ids"][0]
    b = wait_job(client, post_job(client, {**GEN, "prompt": "a blue cube", "seeds": [5]}))["result"]["image_ids"][0]
    job = wait_job(client, post_job(client, {"images": [a, b], "frames": 3, "steps": 2, "precision": "model",
                                             "formats": []}, "/api/v1/interpolate"))
    assert job["status"] == "completed", job
    frames = job["result"]["image_ids"]
    # Their embeddings, from the first image's seed to the last one's: the ends are the images.
    assert np.abs(pixels(frames[0]) - pixels(a)).mean() < 1.0
    assert np.abs(pixels(frames[-1]) - pixels(b)).mean() < 1.0
    assert np.abs(pixels(frames[1]) - pixels(a)).mean() > 1.0
    r = client.post("/api/v1/interpolate", json={"images": [a, frames[1]], "steps": 2})
    assert r.status_code == 422 and "interpolate result" in r.text  # a frame is not given by its seed
    r = client.post("/api/v1/interpolate", json={"images": [a, b], "keyframes": [{"prompt": "x"}]})
    assert r.status_code == 422 and "keyframes or images" in r.text
    assert client.post("/api/v1/interpolate", json={"images": [a, "0123456789abcdef"]}).status_code == 404


def test_a_constant_speed_path_is_re_timed_and_reports_both_profiles(client):
    job = wait_job(client, post_job(client, {"keyframes": [{"prompt": "a red ball"}, {"prompt": "a blue cube"}],
                                             "frames": 4, "steps": 2, "constant_speed": True, "refine": 4},
                                    "/api/v1/interpolate"), timeout=60)
    assert job["status"] == "completed", job
    result = job["result"]
    speed = result["speed"]
    assert result["constant_speed"] is True and len(result["image_ids"]) == 4
    assert len(speed["distances_before"]) == 3 and len(speed["distances"]) == 3
    alphas = result["alphas"]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and alphas != [0.0, 1 / 3, 2 / 3, 1.0]  # moved off even spacing
    # The ratios are those of the profiles returned (an almost even path may not get more even).
    for key, ratio in (("distances", "ratio"), ("distances_before", "ratio_before")):
        d = speed[key]
        assert speed[ratio] == pytest.approx(max(d) / (sum(d) / len(d)))


@pytest.mark.parametrize("body, field", [
    ({"keyframes": [{"prompt": "a"}], "frames": 3}, "keyframes"),
    ({"keyframes": [{"prompt": "a"}, {"prompt": "b"}], "refine": 1000}, "refine"),
    ({"keyframes": [{"prompt": "a"}, {"prompt": "b"}], "range": [0.5, 0.5]}, "range"),
    ({"keyframes": [{"embedding_id": "0123456789abcdef"}, {"prompt": "b"}]}, "keyframes"),
    ({"keyframes": [{"prompt": "a"}, {"prompt": "b"}], "frames": 1}, "frames"),
    ({"keyframes": [{"prompt": "a"}, {"prompt": "b"}], "formats": ["avi"]}, "formats"),
])
def test_interpolate_validation(client, body, field):
    r = client.post("/api/v1/interpolate", json=body)
    assert r.status_code == 422 and field in [str(x) for e in r.json()["detail"] for x in e["loc"]], r.text
    assert job_count(client) == 0


def test_optimize_job_reports_metric_events(client):
    job_id = post_job(client, {"prompt": "a red ball", "metric": "sharpness", "iterations": 2, "steps": 2},
                      "/api/v1/optimize")
    job = wait_job(client, job_id, timeout=60)
    assert job["status"] == "completed", job
    result = job["result"]
    assert client.get(f"/api/v1/embeddings/{result['embedding_id']}").json()["source"] == "optimize"
    assert result["image_ids"]["before"] and result["image_ids"]["after"]
    for i in result["image_ids"]["before"] + result["image_ids"]["after"]:
        assert client.get(f"/api/v1/images/{i}").json()["method"] == "optimize"
    metrics = [e for e in sse_events(client.get(f"/api/v1/jobs/{job_id}/events").text) if e["event"] == "job.metric"]
    assert metrics and all(isinstance(e["data"]["score"], float) for e in metrics)
    assert all(e["data"]["metric"] == result["metric"] for e in metrics)
    # The current picture after each iteration: a job.frame event and the latest as a PNG.
    frames = [e["data"] for e in sse_events(client.get(f"/api/v1/jobs/{job_id}/events").text)
              if e["event"] == "job.frame"]
    assert [f["iteration"] for f in frames] == [0, 1]
    png = client.get(frames[-1]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-iteration"] == "1" and png.headers["cache-control"] == "no-store"
    assert png.content.startswith(b"\x89PNG")
    gen = post_job(client, {"prompt": "a red ball", "steps": 2})
    wait_job(client, gen)
    assert client.get(f"/api/v1/jobs/{gen}/frame.png").status_code == 404  # it showed no picture
    assert client.get("/api/v1/jobs/0123456789abcdef/frame.png").status_code == 404
    r = client.post("/api/v1/optimize", json={"prompt": "a", "metric": "no-such-metric"})
    assert r.status_code == 422 and error_fields(r) == ["metric"]


def test_invariant_job(client):
    job = wait_job(client, post_job(client, {"prompt": "a red ball", "iterations": 2, "steps": 3,
                                             "eval_seeds": [1, 2]}, "/api/v1/invariant"), timeout=60)
    assert job["status"] == "completed", job
    result = job["result"]
    assert client.get(f"/api/v1/embeddings/{result['embedding_id']}").json()["source"] == "invariant"
    assert len(result["image_ids"]["before"]) == 2 and len(result["image_ids"]["after"]) == 2
    assert len(result["image_ids"]["target"]) == 1


def test_steps_past_the_schedule_are_refused_before_queueing(client):
    r = client.post("/api/v1/generate", json={"prompt": "a red ball", "steps": 1000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "steps"
    assert client.get("/api/v1/jobs").json()["jobs"] == []


# --------------------------------------------------------------------------- uploaded images as targets


def png_bytes_of(width: int, height: int, fmt: str = "PNG") -> bytes:
    arr = np.random.default_rng(width * 1000 + height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def test_an_uploaded_image_is_stored_as_a_png_without_its_metadata(client):
    r = client.post("/api/v1/uploads/image", content=png_bytes_of(40, 30, "JPEG"))
    assert r.status_code == 201, r.text
    view = r.json()
    assert (view["width"], view["height"]) == (40, 30) and view["url"] == f"/api/v1/artifacts/{view['id']}"
    stored = client.get(view["url"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(stored.content)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (40, 30)
    # Large images are scaled down to 1024 a side; alpha is dropped.
    flat = io.BytesIO()
    Image.new("RGBA", (2048, 1024), (10, 200, 30, 128)).save(flat, format="PNG")
    big = client.post("/api/v1/uploads/image", content=flat.getvalue()).json()
    assert (big["width"], big["height"]) == (1024, 512)


def test_bad_uploads_are_refused_before_decoding(make_client):
    client = make_client(max_upload_bytes=64 * 1024)
    assert client.post("/api/v1/uploads/image", content=b"not an image").status_code == 422
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    r = client.post("/api/v1/uploads/image", content=gif.getvalue())
    assert r.status_code == 422 and "GIF" in r.text
    # Headers that claim too many pixels (decompression bombs) are refused from the header.
    for side, needle in ((5000, "5000x5000"), (20000, "too many pixels")):
        bomb = io.BytesIO()
        Image.new("1", (side, side)).save(bomb, format="PNG")
        assert len(bomb.getvalue()) < 64 * 1024
        r = client.post("/api/v1/uploads/image", content=bomb.getvalue())
        assert r.status_code == 422 and needle in r.text, r.text
    assert client.post("/api/v1/uploads/image", content=b"\x00" * (64 * 1024 + 1)).status_code == 413
    assert client.app.state.store.db.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 0


def test_an_invariant_job_takes_an_uploaded_image_as_its_target(client):
    upload = client.post("/api/v1/uploads/image", content=png_bytes_of(48, 40)).json()["id"]
    job = wait_job(client, post_job(client, {"prompt": "a red ball", "target_upload_id": upload, "iterations": 2,
                                             "steps": 3, "eval_seeds": [1, 2]}, "/api/v1/invariant"), timeout=60)
    assert job["status"] == "completed", job
    result = job["result"]
    assert result["target_upload_id"] == upload and "target" not in result["image_ids"]
    assert len(result["image_ids"]["after"]) == 2 and result["distance_after"] >= 0
    for body, field in (({"prompt": "a", "target_upload_id": upload, "target_seed": 3}, "target"),
                        ({"prompt": "a", "target_upload_id": "0123456789abcdef"}, "target_upload_id")):
        r = client.post("/api/v1/invariant", json=body)
        assert r.status_code == 422 and field in r.text, r.text
