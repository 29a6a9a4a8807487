"""Search over what is stored: ranking by likeness and by text, owners, the in-memory index."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from noise2art.service.search import FeatureIndex
from noise2art.store import Store
from tests.service.conftest import post_job, wait_job


def generate(client, prompt: str, seeds) -> list[str]:
    job = wait_job(client, post_job(client, {"prompt": prompt, "seeds": list(seeds), "steps": 2}))
    assert job["status"] == "completed", job
    return job["result"]["image_ids"]


def test_like_ranks_stored_images_by_their_features(client):
    ids = generate(client, "a red ball", range(3)) + generate(client, "a blue cube", range(3))
    r = client.get(f"/api/v1/search?like={ids[0]}&limit=10")
    assert r.status_code == 200, r.text
    hits = r.json()["images"]
    assert [h["id"] for h in hits] and ids[0] not in [h["id"] for h in hits]
    assert sorted(h["id"] for h in hits) == sorted(ids[1:])
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert r.json()["kind"] == "thumbnail"  # the tiny model has no image-text model


def test_text_search_needs_an_image_text_model(client):
    r = client.get("/api/v1/search?q=a red ball")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "q"
    assert client.get("/api/v1/search").status_code == 422
    assert client.get("/api/v1/search?like=0000000000000000").status_code == 422


class FakeClip(torch.nn.Module):
    """World-CLIP stand-in: image features are the mean colour, text features a fixed projection."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.randn(width, 3, generator=torch.Generator().manual_seed(0))

    def encode_image(self, images):
        return F.normalize(images.float().mean(dim=(2, 3)) - 0.4, dim=-1)

    def encode_text(self, pooled):
        return F.normalize(pooled.float() @ self.proj, dim=-1)


def test_text_search_ranks_by_the_image_text_model_and_gives_the_stream(client, tiny_model, monkeypatch):
    from noise2art.engine.companions import world_clip_text

    monkeypatch.setattr(tiny_model.companions, "world_clip", FakeClip(tiny_model.embedding_shape[1]))
    ids = generate(client, "a red ball", range(4)) + generate(client, "a blue cube", range(4))
    r = client.get("/api/v1/search?q=a red ball&limit=8")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["kind"] == "world-clip" and data["stream_id"]
    text = world_clip_text(tiny_model, ["a red ball"])[0].float().numpy()
    store = client.app.state.store
    scores = {i: float(np.frombuffer(store.image_feature(i)[1], dtype=np.float32) @ (text / np.linalg.norm(text)))
              for i in ids}
    expected = sorted(ids, key=lambda i: -scores[i])
    got = data["images"]
    assert [h["id"] for h in got] == expected
    assert all(abs(h["score"] - scores[h["id"]]) < 1e-5 for h in got)
    assert client.get(f"/api/v1/streams/{data['stream_id']}").json()["kind"] == "query"


def test_the_index_matches_brute_force_and_catches_up(tmp_path):
    store = Store(tmp_path / "data")
    rng = np.random.default_rng(0)

    def add(n, owner):
        vecs = rng.normal(size=(n, 16)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rows = store.add_images([(f"png{owner}{k}{rng.random()}".encode(), dict(
            model_id="m", embedding_id=None, prompt="p", negative="", seed=k, steps=1, guidance=1.0, scheduler="d",
            width=8, height=8, precision="model", method="test", job_id=None, owner=owner,
            features=("k", vecs[k].tobytes()))) for k in range(n)])
        return [r["id"] for r in rows], vecs

    ids_a, vecs_a = add(300, "a")
    index = FeatureIndex(store)
    q = rng.normal(size=16).astype(np.float32)
    hits = index.search("k", q, "a", limit=10)
    truth = np.argsort(-(vecs_a @ (q / np.linalg.norm(q))))[:10]
    assert [h[0] for h in hits] == [ids_a[i] for i in truth]
    ids_b, _ = add(50, "b")  # another owner's images never show, and new rows are found
    assert not {h[0] for h in index.search("k", q, "a", limit=400)} & set(ids_b)
    assert len(index.search("k", q, "b", limit=400)) == 50
    assert index.search("other-kind", q, "a") == []
    store.close()
