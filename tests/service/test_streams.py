"""Streams of the infinite index through the API: ids, pages (200 stored, 202 rendering), prefetch."""

from __future__ import annotations

from tests.service.conftest import wait_job


def create(client, **body) -> dict:
    r = client.post("/api/v1/streams", json={"steps": 2, **body})
    assert r.status_code == 201, r.text
    return r.json()


def full_page(client, stream_id: str, page: int, size: int = 4) -> dict:
    r = client.get(f"/api/v1/streams/{stream_id}/pages/{page}?size={size}")
    if r.status_code == 202:
        wait_job(client, r.json()["job_id"])
        r = client.get(f"/api/v1/streams/{stream_id}/pages/{page}?size={size}")
    assert r.status_code == 200, r.text
    return r.json()


def test_the_same_request_gives_the_same_stream(client):
    a = create(client, query="a red ball")
    b = create(client, query="a red ball")
    c = create(client, query="a red ball", shared_seeds=True)
    assert a["id"] == b["id"] != c["id"] and a["kind"] == "query"
    assert client.get(f"/api/v1/streams/{a['id']}").json() == a


def test_a_page_is_202_while_rendering_then_200_with_every_image(client):
    stream = create(client, query="a red ball")
    r = client.get(f"/api/v1/streams/{stream['id']}/pages/1?size=4")
    assert r.status_code == 202 and r.json()["job_id"] and not r.json()["complete"]
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "completed"
    page = full_page(client, stream["id"], 1)
    assert page["complete"] and [i["idx"] for i in page["images"]] == [4, 5, 6, 7]
    assert job["result"]["image_ids"] == [i["id"] for i in page["images"]]
    first = page["images"][0]
    image = client.get(f"/api/v1/images/{first['id']}").json()
    assert image["seed"] == first["seed"] and image["method"] == "search"
    assert image["extra"]["stream"] == {"stream": stream["id"], "kind": "query", "idx": 4}
    assert client.get(first["url"]).headers["content-type"] == "image/png"
    # The next page was queued at low priority while page 1 rendered.
    kinds = [(j["kind"], j["status"]) for j in client.get("/api/v1/jobs").json()["jobs"]]
    assert len([k for k in kinds if k[0] == "stream.page"]) == 2


def test_pages_share_no_seed_and_are_stable(client):
    stream = create(client, query="a red ball")
    p0, p1 = full_page(client, stream["id"], 0), full_page(client, stream["id"], 1)
    assert not {i["seed"] for i in p0["images"]} & {i["seed"] for i in p1["images"]}
    assert full_page(client, stream["id"], 0) == p0


def test_directed_and_like_streams(client):
    steered = create(client, query="a ball", toward="snow")
    assert steered["toward"]["concept"] == "snow" and steered["toward"]["weight"] > 0
    page = full_page(client, steered["id"], 0, 2)
    assert all(i["toward"] == steered["toward"] for i in page["images"])
    like = create(client, like=page["images"][0]["id"])
    assert like["kind"] == "like" and like["settings"]["steps"] == 2
    assert len(full_page(client, like["id"], 0, 2)["images"]) == 2
    # A like result is not an anchor (its noise is not its seed's).
    liked = full_page(client, like["id"], 0, 2)["images"][0]["id"]
    r = client.post("/api/v1/streams", json={"like": liked})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "like"


def test_bad_stream_requests_are_422_or_404(client):
    for body in ({}, {"query": "a", "like": "0" * 16}, {"like": "0" * 16, "toward": "snow"},
                 {"between": ["0" * 16]}, {"query": "a", "similarity": 0.5}):
        assert client.post("/api/v1/streams", json=body).status_code == 422, body
    assert client.post("/api/v1/streams", json={"like": "0" * 16}).status_code == 422  # no such image
    assert client.get("/api/v1/streams/0000000000000000/pages/0").status_code == 404
    stream = create(client, query="a red ball")
    assert client.get(f"/api/v1/streams/{stream['id']}/pages/0?size=0").status_code == 422
    assert client.get(f"/api/v1/streams/{stream['id']}/pages/-1").status_code == 422


def test_a_prefetched_page_gives_way_to_the_page_someone_asks_for(client):
    from tests.service.conftest import sse_events, wait_for

    stream = create(client, query="a red ball", steps=60)
    r = client.get(f"/api/v1/streams/{stream['id']}/pages/0?size=8")
    wait_job(client, r.json()["job_id"])
    jobs = client.get("/api/v1/jobs").json()["jobs"]
    prefetch = next(j for j in jobs if j["kind"] == "stream.page" and j["id"] != r.json()["job_id"])
    wait_for(lambda: client.get(f"/api/v1/jobs/{prefetch['id']}").json()["status"] == "running", 20,
             "the prefetched page to start")
    urgent = client.get(f"/api/v1/streams/{stream['id']}/pages/5?size=8").json()["job_id"]
    done = wait_job(client, urgent)
    assert done["status"] == "completed"
    later = wait_job(client, prefetch["id"])
    assert later["status"] == "completed" and later["finished"] > done["finished"]
    events = [e["event"] for e in sse_events(client.get(f"/api/v1/jobs/{prefetch['id']}/events").text)]
    assert "job.requeued" in events
    # The resumed page is whole: results 8..15, one image each.
    page = full_page(client, stream["id"], 1, 8)
    assert [i["idx"] for i in page["images"]] == list(range(8, 16)) and len({i["id"] for i in page["images"]}) == 8


def test_a_preview_stream_renders_at_the_models_preview_and_an_image_renders_again_at_full_quality(
        client, tiny_model):
    from noise2art.engine.settings import SamplingOverrides

    saved = tiny_model.defaults, tiny_model.preview
    tiny_model.defaults, tiny_model.preview = SamplingOverrides(steps=3), SamplingOverrides(steps=2, scheduler="euler")
    try:
        health = client.get("/api/v1/health").json()
        assert health["defaults"]["steps"] == 3 and health["preview"] == {**health["defaults"], "steps": 2,
                                                                           "scheduler": "euler"}
        stream = client.post("/api/v1/streams", json={"query": "a red ball", "quality": "preview"}).json()
        assert stream["settings"]["steps"] == 2 and stream["settings"]["scheduler"] == "euler"
        preview = full_page(client, stream["id"], 0, size=2)["images"][0]
        r = client.post(f"/api/v1/images/{preview['id']}/render", json={})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["job_id"])
        assert job["status"] == "completed", job
        before = client.get(f"/api/v1/images/{preview['id']}").json()
        after = client.get(f"/api/v1/images/{job['result']['image_ids'][0]}").json()
        assert (after["steps"], after["scheduler"], after["method"]) == (3, "default", "generate")
        assert (after["seed"], after["embedding_id"]) == (before["seed"], before["embedding_id"])
        # A "like" result mixes its anchor's noise: its seed alone does not give it.
        like = client.post("/api/v1/streams", json={"like": preview["id"], "steps": 2}).json()
        moved = full_page(client, like["id"], 0, size=2)["images"][1]
        r = client.post(f"/api/v1/images/{moved['id']}/render", json={})
        assert r.status_code == 422 and "like result" in r.text
        assert client.post("/api/v1/images/0123456789abcdef/render", json={}).status_code == 404
    finally:
        tiny_model.defaults, tiny_model.preview = saved


def test_previews_drawn_by_a_student_name_it_and_a_like_stream_keeps_it(with_student, client):
    health = client.get("/api/v1/health").json()
    assert health["preview"]["model"] == "tiny-fast" and health["defaults"]["model"] == with_student.model_id
    r = client.post("/api/v1/generate", json={"prompt": "a red ball", "seeds": [5], "quality": "preview"})
    job = wait_job(client, r.json()["job_id"])
    image = client.get(f"/api/v1/images/{job['result']['image_ids'][0]}").json()
    assert image["model_id"] == "tiny-fast" and (image["steps"], image["guidance"]) == (3, 1.0)
    assert "Model: tiny-fast" in image["parameters"]
    like = create(client, like=image["id"])  # a stream around it goes on with the same UNet ...
    assert like["settings"]["unet"] == "tiny-fast"
    full = client.post("/api/v1/generate", json={"prompt": "a red ball", "seeds": [5]})
    image = client.get(f"/api/v1/images/{wait_job(client, full.json()['job_id'])['result']['image_ids'][0]}").json()
    assert image["model_id"] == with_student.model_id  # ... and full quality runs the model's own


def test_a_between_stream_through_the_api_marks_the_results_that_cross_a_bridge(client, tiny_model, monkeypatch):
    from tests.methods.test_index import fake_path, jump_at

    ends = full_page(client, create(client, query="a red ball")["id"], 0, 2)["images"]
    # The path measures as one flip at t = 0.6 (2 of its length 3): the stream bridges it.
    fake_path(monkeypatch, jump_at(0.6, size=2.0))
    stream = create(client, between=[ends[0]["id"], ends[1]["id"]])
    assert stream["kind"] == "between"
    page = full_page(client, stream["id"], 0, 7)
    images = page["images"]
    assert [i["idx"] for i in images] == list(range(7)) and all(0 < i["t"] < 1 for i in images)
    assert all(i["seed"] == ends[0]["seed"] for i in images)  # the first image's seed drives the path
    # The first seven arc-length fractions: 1/8 and 7/8 stay on the path, the others cross the bridge.
    bridged = [i for i in images if i["bridge"]]
    assert sorted(i["idx"] for i in bridged) == [0, 1, 2, 4, 5]
    bridge = bridged[0]["bridge"]
    assert bridge["from"] < 0.6 < bridge["to"] and bridge["step"] == 1
    assert all(i["bridge"] == bridge and bridge["from"] < i["t"] < bridge["to"] for i in bridged)
    record = client.get(f"/api/v1/images/{bridged[0]['id']}").json()["extra"]["stream"]
    assert record["bridge"] == bridge and record["kind"] == "between"
    assert client.get(bridged[0]["url"]).headers["content-type"] == "image/png"
    # Asked without bridges: another stream, every result on the path.
    plain = create(client, between=[ends[0]["id"], ends[1]["id"]], bridges=False)
    assert plain["id"] != stream["id"]
    assert not any(i["bridge"] for i in full_page(client, plain["id"], 0, 3)["images"])
    r = client.post("/api/v1/streams", json={"query": "a ball", "bridges": False})
    assert r.status_code == 422 and "bridges" in r.text
