"""Feedback sessions through the API: create, render a round (a job), choose, undo, export, resume."""

from __future__ import annotations

import torch

from noise2art.engine.embedding import PromptEmbedding
from tests.service.conftest import wait_job


def create(client, **body):
    r = client.post("/api/v1/sessions", json={"prompt": "a red ball", "steps": 2, "n_variants": 3, **body})
    assert r.status_code == 201, r.text
    return r.json()


def round_images(client, session_id: str) -> dict:
    r = client.post(f"/api/v1/sessions/{session_id}/round")
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "completed", job
    return job["result"]


def test_a_session_round_choose_undo_and_export(client, tiny_model):
    session = create(client)
    assert session["round"] == 1 and session["history"] == [] and session["n_variants"] == 3
    assert [s["id"] for s in client.get("/api/v1/sessions").json()["sessions"]] == [session["id"]]
    result = round_images(client, session["id"])
    assert result["round"] == 1 and len(result["candidate_image_ids"]) == 3
    for image_id in [result["current_image_id"], *result["candidate_image_ids"]]:
        row = client.get(f"/api/v1/images/{image_id}").json()
        assert row["method"] == "explore" and row["extra"]["session"] == session["id"]
    before = PromptEmbedding.from_bytes(client.get(
        client.post(f"/api/v1/sessions/{session['id']}/export").json()["url"]).content)
    after_choice = client.post(f"/api/v1/sessions/{session['id']}/choose", json={"index": 1, "strength": 0.5}).json()
    assert after_choice["round"] == 2 and after_choice["history"][0]["index"] == 1
    moved = PromptEmbedding.from_bytes(client.get(
        client.post(f"/api/v1/sessions/{session['id']}/export").json()["url"]).content)
    assert not torch.allclose(moved.cond, before.cond)
    # The next round is another job with other candidates.
    second = round_images(client, session["id"])
    assert second["round"] == 2 and second["candidate_image_ids"] != result["candidate_image_ids"]
    undone = client.post(f"/api/v1/sessions/{session['id']}/undo").json()
    assert undone["round"] == 1 and undone["history"] == []
    back = PromptEmbedding.from_bytes(client.get(
        client.post(f"/api/v1/sessions/{session['id']}/export").json()["url"]).content)
    assert torch.equal(back.cond, before.cond)


def test_a_session_resumes_from_its_folder_after_a_restart(make_client, tmp_path):
    data = tmp_path / "data"
    client = make_client(data=data)
    session = create(client)
    round_images(client, session["id"])
    client.post(f"/api/v1/sessions/{session['id']}/choose", json={"index": 0})
    client.__exit__(None, None, None)  # stop the server: the session lives only in its folder now
    again = make_client(data=data)
    view = again.get(f"/api/v1/sessions/{session['id']}").json()
    assert view["round"] == 2 and view["history"][0]["index"] == 0


def test_session_errors(client):
    assert client.post("/api/v1/sessions", json={"prompt": ""}).status_code == 422
    assert client.post("/api/v1/sessions", json={"prompt": "a", "recommender": "magic"}).status_code == 422
    assert client.post("/api/v1/sessions", json={"prompt": "a", "scheduler": "warp"}).status_code == 422
    assert client.get("/api/v1/sessions/0000000000000000").status_code == 404
    session = create(client)
    r = client.post(f"/api/v1/sessions/{session['id']}/undo")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "undo"
    round_images(client, session["id"])
    r = client.post(f"/api/v1/sessions/{session['id']}/choose", json={"index": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "index"


def test_the_session_map_is_a_png_that_follows_the_choices(client):
    import io

    import numpy as np
    from PIL import Image

    session = create(client)
    round_images(client, session["id"])
    r = client.get(f"/api/v1/sessions/{session['id']}/map.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    first = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert first.shape == (512, 512, 3) and first.std() > 0
    client.post(f"/api/v1/sessions/{session['id']}/choose", json={"index": 0, "strength": 0.5})
    after = np.asarray(Image.open(io.BytesIO(client.get(f"/api/v1/sessions/{session['id']}/map.png").content)))
    assert not np.array_equal(first, after[..., :3])  # one more point on the path, new candidates
    assert client.get("/api/v1/sessions/0000000000000000/map.png").status_code == 404
