"""Safe by default: bind address, tokens, logins, owners, Host and Origin checks, users."""

from __future__ import annotations

import io
import sys

import pytest

from tests.service.conftest import post_job, wait_job

TOKEN = "s3cret-token-of-twenty"
GEN = {"prompt": "a red ball", "steps": 2}


@pytest.fixture(autouse=True)
def cheap_hashes(fast_password_hashing):
    """Argon2 with small costs: the same code paths, without seconds of hashing per test."""


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_binding_all_interfaces_needs_a_token(tmp_path, tiny_model):
    from noise2art.errors import InvalidArgument
    from noise2art.service.app import create_app
    from noise2art.service.config import ServiceConfig

    for host in ("0.0.0.0", "::", "192.168.1.20"):
        with pytest.raises(InvalidArgument) as info:
            ServiceConfig(data=tmp_path, host=host).check()
        assert info.value.name == "host" and host in str(info.value)
    with pytest.raises(InvalidArgument):
        create_app(ServiceConfig(data=tmp_path, host="0.0.0.0"), model=tiny_model)
    with pytest.raises(InvalidArgument) as info:
        ServiceConfig(data=tmp_path, host="0.0.0.0", token="short").check()
    assert info.value.name == "token"
    ServiceConfig(data=tmp_path, host="0.0.0.0", token=TOKEN).check()
    ServiceConfig(data=tmp_path, host="::1").check()
    assert "0.0.0.0" not in ServiceConfig(data=tmp_path, host="0.0.0.0", token=TOKEN).hosts()


def test_a_token_makes_every_api_call_need_credentials(make_client):
    client = make_client(token=TOKEN)
    assert client.get("/api/v1/health").status_code == 200  # open, for probes
    assert client.get("/openapi.json").status_code == 200
    for method, path in (("GET", "/api/v1/jobs"), ("GET", "/api/v1/library"), ("POST", "/api/v1/generate"),
                         ("GET", "/api/v1/jobs/0123456789abcdef"), ("GET", "/api/v1/events"),
                         ("POST", "/api/v1/embeddings/upload")):
        r = client.request(method, path, json=GEN if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.request(method, path, headers=bearer("wrong-token-of-twenty")).status_code == 401
    assert client.get("/api/v1/jobs", headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    assert client.app.state.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    job = wait_job(client, post_job(client, GEN, headers=bearer(TOKEN)), headers=bearer(TOKEN))
    assert job["status"] == "completed"
    jobs = client.get("/api/v1/jobs", headers=bearer(TOKEN)).json()["jobs"]
    assert [j["id"] for j in jobs] == [job["id"]]


def _cookie_header(response) -> str:
    [cookie] = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    return cookie


def test_login_api_sets_a_strict_http_only_cookie(make_client):
    from fastapi.testclient import TestClient

    client = make_client(token=TOKEN)
    r = client.post("/api/v1/login", json={"password": TOKEN})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "" and len(body["token"]) >= 32 and body["token"] != TOKEN
    cookie = _cookie_header(r)
    assert cookie.startswith(f"noise2art_session={body['token']}")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
    assert "secure" not in cookie.lower()  # plain http on loopback
    # The cookie alone authenticates, and so does the login token as a bearer token.
    assert client.get("/api/v1/jobs").status_code == 200
    # A second client without the cookie (not started: the app runs already).
    fresh = TestClient(client.app, base_url="http://localhost:8000")
    assert fresh.get("/api/v1/jobs").status_code == 401
    assert fresh.get("/api/v1/jobs", headers=bearer(body["token"])).status_code == 200
    fresh.cookies.set("noise2art_session", body["token"])
    assert fresh.get("/api/v1/jobs").status_code == 200
    fresh.cookies.set("noise2art_session", "forged")
    assert fresh.get("/api/v1/jobs").status_code == 401
    # Logging out ends the login.
    assert client.post("/api/v1/logout").status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/jobs", headers=bearer(body["token"])).status_code == 401


def test_wrong_password_is_401(make_client):
    from noise2art.service.security import hash_password

    client = make_client(token=TOKEN)
    client.app.state.store.add_user("alice", hash_password("alice-password"))
    for body in ({"password": "wrong-token-of-twenty"}, {"name": "alice", "password": "nope-nope"},
                 {"name": "alice", "password": TOKEN}, {"name": "nobody", "password": "alice-password"}):
        r = client.post("/api/v1/login", json=body)
        assert r.status_code == 401, body
        assert "set-cookie" not in r.headers
    assert client.post("/api/v1/login", json={"password": ""}).status_code == 422
    r = client.post("/login", data={"name": "alice", "password": "nope"}, follow_redirects=False)
    assert r.status_code == 401 and "Wrong name or password for alice" in r.text and "set-cookie" not in r.headers


def test_login_form_sets_the_cookie(make_client):
    client = make_client(token=TOKEN)
    page = client.get("/login")
    assert page.status_code == 200 and "<form" in page.text and page.headers["x-frame-options"] == "DENY"
    r = client.post("/login", data={"password": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = _cookie_header(r)
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert client.get("/api/v1/jobs").status_code == 200
    client.cookies.clear()
    assert client.get("/api/v1/jobs").status_code == 401


def test_named_users_see_only_their_own_rows(make_client):
    from noise2art.service.security import hash_password

    client = make_client()
    store = client.app.state.store
    assert client.get("/api/v1/jobs").status_code == 200  # no users, loopback: open
    for name in ("alice", "bob"):
        store.add_user(name, hash_password(f"{name}-password"))
    assert client.get("/api/v1/health").json()["users"] is True
    assert client.get("/api/v1/jobs").status_code == 401  # users exist: log in first
    tokens = {}
    for name in ("alice", "bob"):
        r = client.post("/api/v1/login", json={"name": name, "password": f"{name}-password"})
        assert r.status_code == 200 and r.json()["user"] == name
        tokens[name] = bearer(r.json()["token"])
    client.cookies.clear()
    alice, bob = tokens["alice"], tokens["bob"]

    job = wait_job(client, post_job(client, {**GEN, "seeds": [1]}, headers=alice), headers=alice)
    image_id = job["result"]["image_ids"][0]
    emb_id = job["result"]["embedding_id"]
    assert client.put(f"/api/v1/images/{image_id}/like", headers=alice).json()["liked"] is True
    assert client.get(f"/api/v1/images/{image_id}", headers=alice).json()["liked"] is True

    for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/events", f"/api/v1/images/{image_id}",
                 f"/api/v1/images/{image_id}.png", f"/api/v1/embeddings/{emb_id}",
                 f"/api/v1/embeddings/{emb_id}.safetensors"):
        assert client.get(path, headers=bob).status_code == 404, path
        assert client.get(path, headers=alice).status_code == 200, path
    assert client.put(f"/api/v1/images/{image_id}/like", headers=bob).status_code == 404
    assert client.delete(f"/api/v1/images/{image_id}/like", headers=bob).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=bob).status_code == 404
    assert client.get("/api/v1/jobs", headers=bob).json()["jobs"] == []
    assert client.get("/api/v1/library", headers=bob).json()["images"] == []
    assert client.get("/api/v1/library", headers=bob, params={"liked": "true"}).json()["images"] == []
    assert [i["id"] for i in client.get("/api/v1/library", headers=alice).json()["images"]] == [image_id]
    # Bob cannot use Alice's embedding either.
    r = client.post("/api/v1/generate", json={"embedding_id": emb_id, "steps": 2}, headers=bob)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "embedding_id"
    r = client.post("/api/v1/embeddings", json={"blend": [{"embedding_id": emb_id, "weight": 1}]}, headers=bob)
    assert r.status_code == 422
    # The same request by Bob is his own job, not a duplicate of Alice's.
    created = client.post("/api/v1/generate", json={**GEN, "seeds": [1]}, headers=bob).json()
    assert created["job_id"] != job["id"] and created["deduplicated"] is False
    wait_job(client, created["job_id"], headers=bob)
    assert client.get("/api/v1/library", headers=bob).json()["images"][0]["liked"] is False


def test_host_allow_list(make_client):
    client = make_client()
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", ""):
        r = client.get("/api/v1/health", headers={"Host": host})
        assert r.status_code == 400, host
    for host in ("localhost:8000", "127.0.0.1:8000", "localhost", "LOCALHOST:8000"):
        assert client.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
    named = make_client(allowed_hosts=["art.example"])
    assert named.get("/api/v1/health").status_code == 400  # localhost:8000 is no longer named
    assert named.get("/api/v1/health", headers={"Host": "art.example"}).status_code == 200


def test_foreign_origin_cannot_change_state_or_stream(client):
    evil = {"Origin": "http://evil.example"}
    r = client.post("/api/v1/generate", json=GEN, headers=evil)
    assert r.status_code == 403
    assert client.post("/api/v1/embeddings", json={"prompt": "a"}, headers=evil).status_code == 403
    assert client.post("/login", data={"password": "x"}, headers=evil).status_code == 403
    assert client.app.state.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    job_id = post_job(client, GEN, headers={"Origin": "http://localhost:8000"})
    job = wait_job(client, job_id)
    assert job["status"] == "completed"
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=evil).status_code == 403
    assert client.get(f"/api/v1/jobs/{job_id}/events", headers=evil).status_code == 403
    assert client.get("/api/v1/events", headers=evil).status_code == 403
    assert client.get(f"/api/v1/jobs/{job_id}/events", headers={"Origin": "http://localhost:8000"}).status_code == 200
    # A plain read from another origin is answered, but without CORS headers a page cannot read it.
    r = client.get(f"/api/v1/jobs/{job_id}", headers=evil)
    assert r.status_code == 200
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    pre = client.options("/api/v1/generate", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert not any(k.lower().startswith("access-control-") for k in pre.headers)


def test_cors_only_for_named_origins(make_client):
    client = make_client(cors_origins=["http://app.example"])
    ok = {"Origin": "http://app.example"}
    r = client.get("/api/v1/health", headers=ok)
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    assert client.post("/api/v1/generate", json=GEN, headers=ok).status_code == 202
    r = client.post("/api/v1/generate", json=GEN, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_user_add_command_creates_a_user_who_can_log_in(tmp_path, make_client, monkeypatch, capsys):
    from noise2art.cli.main import main

    data = tmp_path / "cli-data"
    monkeypatch.setattr(sys, "stdin", io.StringIO("carol-password\n"))
    assert main(["user", "add", "carol", "--data", str(data), "--password-stdin"]) == 0
    assert "carol" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["user", "add", "dave", "--data", str(data), "--password-stdin"]) == 2
    assert "at least 8" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("dave-password\n"))
    assert main(["user", "add", "../dave", "--data", str(data), "--password-stdin"]) == 2

    client = make_client(data=data)
    assert client.get("/api/v1/jobs").status_code == 401
    r = client.post("/api/v1/login", json={"name": "carol", "password": "carol-password"})
    assert r.status_code == 200 and r.json()["user"] == "carol"
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.post("/api/v1/login", json={"name": "dave", "password": "dave-password"}).status_code == 401
    assert client.post("/api/v1/login", json={"name": "carol", "password": "carol-passwort"}).status_code == 401
