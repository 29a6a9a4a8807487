"""The page routes without a browser: every page renders, with a strict CSP, escaped user
text, the static files, and the redirect to /login when the server needs credentials."""

from __future__ import annotations

import pytest

from noise2art.service.web.routes import PAGES

TOKEN = "a-token-of-sixteen-chars"


def test_every_page_renders_with_a_strict_csp_and_navigation(client):
    for path, label, name in PAGES:
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "style-src 'self'" in csp and "img-src 'self' data: blob:" in csp
        assert "unsafe-inline" not in csp and r.headers["x-frame-options"] == "DENY"
        assert f'<script type="module" src="/static/js/{name}.js' in r.text
        assert "style=" not in r.text and "<style" not in r.text and "<script>" not in r.text
        for other, other_label, _ in PAGES:
            assert f'href="{other}"' in r.text, (path, other)
        assert 'aria-current="page"' in r.text


def test_user_text_is_escaped_and_steps_kept(client):
    r = client.get("/", params={"q": '"><script>alert(1)</script>', "toward": "<b>snow</b>", "steps": 2})
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "<b>snow</b>" not in r.text and 'name="steps" value="2"' in r.text
    assert 'href="/library?steps=2"' in r.text
    assert client.get("/", params={"steps": 0}).status_code == 422


@pytest.mark.parametrize("name", ["common", "cards", "search", "library", "jobs", "jobform", "interpolate",
                                  "chart", "optimize", "invariant", "explore", "feed"])
def test_static_scripts_are_served(client, name):
    r = client.get(f"/static/js/{name}.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "innerHTML" not in r.text and "eval(" not in r.text


def test_static_styles_and_icon(client):
    css = client.get("/static/app.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    assert client.get("/static/favicon.svg").status_code == 200
    assert client.get("/static/../routes.py").status_code == 404


def test_pages_redirect_to_login_without_credentials(make_client):
    c = make_client(token=TOKEN)
    for path, _, _ in PAGES:
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
    r = c.get("/library", headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=False)
    assert r.status_code == 200
    assert c.get("/login").status_code == 200
