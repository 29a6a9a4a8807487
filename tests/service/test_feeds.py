"""The generated feed through the API: create, next items with their why, reactions, exact resume."""

from __future__ import annotations


def create(client, **body):
    r = client.post("/api/v1/feeds", json={"topics": ["a red ball", {"prompt": "a blue cube"}], "steps": 2,
                                           "serendipity": 0.5, **body})
    assert r.status_code == 201, r.text
    return r.json()


def test_next_items_have_images_and_reasons_and_learn_from_reactions(client):
    feed = create(client)
    assert feed["topics"] == ["a red ball", "a blue cube"] and feed["items"] == 0
    first = client.get(f"/api/v1/feeds/{feed['id']}/next?n=4").json()["items"]
    assert len(first) == 4 and {i["why"] for i in first} <= {"topic", "serendipity"}
    assert sum(i["why"] == "serendipity" for i in first) == 2  # half the slots at serendipity 0.5
    for item in first:
        image = client.get(f"/api/v1/images/{item['image_id']}").json()
        assert image["method"] == "feed" and image["extra"]["feed"] == feed["id"]
        assert client.get(item["url"]).status_code == 200
    r = client.post(f"/api/v1/feeds/{feed['id']}/events", json={"image_id": first[0]["image_id"], "kind": "like"})
    assert r.status_code == 200 and r.json()["value"] == 1.0
    dwell = client.post(f"/api/v1/feeds/{feed['id']}/events",
                        json={"image_id": first[1]["image_id"], "kind": "dwell", "dwell_ms": 3000}).json()
    assert 0 < dwell["value"] < 1
    second = client.get(f"/api/v1/feeds/{feed['id']}/next?n=4").json()["items"]
    assert {i["image_id"] for i in second}.isdisjoint(i["image_id"] for i in first)
    assert {i["why"] for i in second} <= {"exploit", "explore", "serendipity"}  # it has learnt something now
    view = client.get(f"/api/v1/feeds/{feed['id']}").json()
    assert view["items"] == 8 and view["likes"] == 1


def test_a_feed_resumes_exactly_after_a_restart(make_client, tmp_path):
    data = tmp_path / "data"
    a = make_client(data=data)
    feed = create(a)
    items = a.get(f"/api/v1/feeds/{feed['id']}/next?n=3").json()["items"]
    a.post(f"/api/v1/feeds/{feed['id']}/events", json={"image_id": items[0]["image_id"], "kind": "like"})
    # The same feed run on without a restart, in a second data folder, is the reference.
    ref_client = make_client(data=tmp_path / "ref")
    ref = create(ref_client)
    ref_items = ref_client.get(f"/api/v1/feeds/{ref['id']}/next?n=3").json()["items"]
    ref_client.post(f"/api/v1/feeds/{ref['id']}/events", json={"image_id": ref_items[0]["image_id"], "kind": "like"})
    expected = ref_client.get(f"/api/v1/feeds/{ref['id']}/next?n=3").json()["items"]
    a.__exit__(None, None, None)
    b = make_client(data=data)
    got = b.get(f"/api/v1/feeds/{feed['id']}/next?n=3").json()["items"]
    assert [i["why"] for i in got] == [i["why"] for i in expected]
    z = [b.get(f"/api/v1/images/{i['image_id']}").json()["extra"]["z"] for i in got]
    z_ref = [ref_client.get(f"/api/v1/images/{i['image_id']}").json()["extra"]["z"] for i in expected]
    assert z == z_ref


def test_feed_errors(client):
    assert client.post("/api/v1/feeds", json={"topics": []}).status_code == 422
    assert client.post("/api/v1/feeds", json={"topics": ["a"], "serendipity": 1.5}).status_code == 422
    assert client.post("/api/v1/feeds", json={"topics": [{"image_id": "0" * 16}]}).status_code == 422
    assert client.get("/api/v1/feeds/0000000000000000/next").status_code == 404
    feed = create(client)
    r = client.post(f"/api/v1/feeds/{feed['id']}/events", json={"image_id": "0" * 16, "kind": "like"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "image_id"
    item = client.get(f"/api/v1/feeds/{feed['id']}/next?n=1").json()["items"][0]
    r = client.post(f"/api/v1/feeds/{feed['id']}/events", json={"image_id": item["image_id"], "kind": "dwell"})
    assert r.status_code == 422
