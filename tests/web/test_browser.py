"""The web app in Chromium (Playwright, sync API) against a live server on the tiny model.

Pages pass `?steps=2` so every render is a couple of UNet calls. Set
`NOISE2ART_SCREENSHOTS=1` to write the screenshots into docs/screenshots/.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from tests.service.conftest import free_port, wait_for

pytestmark = pytest.mark.slow

QUERY = "a red ball"
LOADED = "sel => [...document.querySelectorAll(sel)].filter(i => i.complete && i.naturalWidth > 0).length"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def loaded(page, selector="#results img") -> int:
    return page.evaluate(LOADED, selector)


def wait_loaded(page, n: int, selector="#results img", timeout=30_000) -> None:
    page.wait_for_function(f"n => ({LOADED})({selector!r}) >= n", arg=n, timeout=timeout)


def search(page, server, query=QUERY):
    page.goto(f"{server.url}/?steps=2")
    page.locator("#q").evaluate("box => box.blur()")  # an empty search page starts focused there
    page.keyboard.press("/")  # the shortcut focuses the search box
    page.keyboard.type(query)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"\?q=a\+red\+ball"))
    wait_loaded(page, 24)


def test_search_shows_a_page_then_scrolling_loads_more_and_a_reload_shows_the_same(page, server):
    search(page, server)
    first = page.locator("#results img").first
    assert first.get_attribute("alt") == QUERY
    ids = page.eval_on_selector_all("#results .card[data-id]", "cs => cs.slice(0, 24).map(c => c.dataset.id)")
    for _ in range(30):
        if loaded(page) >= 48:
            break
        page.mouse.wheel(0, 4000)
        page.wait_for_timeout(300)
    wait_loaded(page, 48)
    page.reload()
    wait_loaded(page, 24)
    again = page.eval_on_selector_all("#results .card[data-id]", "cs => cs.slice(0, 24).map(c => c.dataset.id)")
    assert again == ids
    assert page.locator("#q").input_value() == QUERY


def test_a_like_survives_a_reload(page, server):
    page.goto(f"{server.url}/?q=a+red+ball&steps=2")
    like = page.locator("#results .card[data-id]").first.locator('[data-action="like"]')
    card_id = page.locator("#results .card[data-id]").first.get_attribute("data-id")
    page.wait_for_function("() => document.querySelector('#results .card[data-id] [data-action=like]')"
                           ".getAttribute('aria-pressed') === 'false'")
    with page.expect_response(lambda r: r.url.endswith(f"/images/{card_id}/like") and r.request.method == "PUT"):
        like.focus()
        page.keyboard.press("Enter")
    # The button shows the answer once the script has it (after the response, not with it).
    page.locator("#results .card[data-id]").first.locator('[data-action="like"][aria-pressed="true"]').wait_for()
    page.reload()
    card = page.locator(f'#results .card[data-id="{card_id}"]')
    card.locator('[data-action="like"][aria-pressed="true"]').wait_for()
    # The Library's liked filter shows it, and its panel has the parameters.
    page.goto(f"{server.url}/library?liked=true")
    page.locator(f'#results .card[data-id="{card_id}"]').locator('[data-action="open"]').click()
    dialog = page.locator("#details")
    dialog.locator("pre.infotext").wait_for()
    assert QUERY in dialog.locator("pre.infotext").inner_text()
    assert dialog.locator("a", has_text="Download PNG").get_attribute("href") == f"/api/v1/images/{card_id}.png"
    page.keyboard.press("Escape")
    assert not dialog.is_visible()


def test_a_job_canceled_from_the_jobs_page_ends_canceled(page, server):
    r = page.request.post(f"{server.url}/api/v1/generate",
                          data={"prompt": "a long job", "steps": 500, "seeds": list(range(8))})
    assert r.status == 202, r.text()
    job_id = r.json()["job_id"]
    page.goto(f"{server.url}/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    row.locator('button[data-action="cancel"]').click()
    page.locator(f'tr[data-job="{job_id}"][data-status="canceled"]').wait_for(timeout=20_000)
    assert page.request.get(f"{server.url}/api/v1/jobs/{job_id}").json()["status"] == "canceled"
    assert not row.locator('button[data-action="cancel"]').is_visible()


def test_the_interpolation_scrubber_changes_the_frame(page, server):
    page.goto(f"{server.url}/interpolate?steps=2")
    page.fill("#frames", "4")
    page.fill("#lo", "-0.25")  # extrapolation is allowed
    page.click("#start")
    page.locator("#viewer").wait_for(state="visible", timeout=45_000)
    frame = page.locator("#frame")
    before = frame.get_attribute("src")
    page.locator("#scrubber").focus()
    page.keyboard.press("End")
    after = frame.get_attribute("src")
    assert before != after and after.startswith("/api/v1/images/")
    assert "a red ball → a blue cube" in frame.get_attribute("alt")
    gif = page.locator("#gif").get_attribute("href")
    r = page.request.get(f"{server.url}{gif}")
    assert r.status == 200 and r.headers["content-type"] == "image/gif"
    # The speed profile: one point per step between the 4 frames.
    assert page.locator("#speed").get_attribute("data-points") == "3"
    assert "Largest step / mean step" in page.locator("#speed-caption").inner_text()


def test_a_constant_speed_interpolation_plots_the_profile_before_and_after(page, server):
    page.goto(f"{server.url}/interpolate?steps=2")
    page.fill("#frames", "4")
    page.check("#constant_speed")
    page.click("#start")
    page.locator("#viewer").wait_for(state="visible", timeout=45_000)
    assert page.locator("#speed").get_attribute("data-points") == "3"
    assert page.locator("#speed polyline.best").count() == 1  # the evenly spaced path's profile
    assert page.locator("#speed-caption").inner_text().startswith("Re-timed: largest step / mean step")


def test_the_optimize_chart_grows_with_each_iteration(page, server):
    page.goto(f"{server.url}/optimize?steps=2")
    page.fill("#metric", "sharpness+0.5*contrast")
    page.fill("#iterations", "3")
    page.click("#start")
    page.wait_for_function("() => document.querySelectorAll('#chart circle.point').length >= 3", timeout=45_000)
    page.locator("#compare").wait_for(state="visible", timeout=45_000)
    wait_loaded(page, 2, "#compare img")
    # The current picture followed the run, iteration by iteration.
    assert page.locator("#current").get_attribute("data-iteration") == "2"
    wait_loaded(page, 1, "#current img")
    # What the picture kept is shown beside the score (the tiny test model has no classifiers).
    kept = page.locator("#kept").inner_text()
    assert "prompt adherence n/a" in kept and "distance to the initial image" in kept


def test_a_cross_site_post_is_refused(page, server):
    """A page on another origin (another port) posts to the API: 403, and no job is made."""
    html = (f"<!doctype html><title>elsewhere</title><script>fetch('{server.url}/api/v1/generate', "
            "{method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, "
            "body: JSON.stringify({prompt: 'cross-site', steps: 1})});</script>").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with page.expect_response(lambda r: r.url.endswith("/api/v1/generate")) as info:
            page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        assert info.value.status == 403
    finally:
        other.shutdown()
        other.server_close()
    jobs = page.request.get(f"{server.url}/api/v1/jobs").json()["jobs"]
    assert not any((j["result"] or {}).get("prompt") == "cross-site" for j in jobs)
    # The same request from the app's own page goes through.
    page.goto(f"{server.url}/jobs")
    status = page.evaluate("() => fetch('/api/v1/images/0000000000000000/like', {method: 'PUT'}).then(r => r.status)")
    assert status == 404  # past the Origin check: no such image
    page.errors.clear()  # that 404 was asked for


PAGES = [("search", "/?q=a+red+ball&steps=2"), ("library", "/library"), ("jobs", "/jobs"),
         ("interpolate", "/interpolate?steps=2"), ("optimize", "/optimize?steps=2"),
         ("invariant", "/invariant?steps=2"), ("explore", "/explore"), ("feed", "/feed")]


def test_pages_load_without_console_errors(page, server, tmp_path):
    shots = SHOTS if os.environ.get("NOISE2ART_SCREENSHOTS") else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 960, "height": 640})
    for name, path in PAGES:
        page.goto(f"{server.url}{path}")
        page.wait_for_load_state("load")
        assert page.locator("h1").count() == 1 and page.locator("nav a[aria-current=page]").count() == 1
        if name == "search":
            wait_loaded(page, 24)
        page.wait_for_timeout(200)
        assert page.evaluate("() => [...document.images].every(i => i.hasAttribute('alt'))")
        if name not in ("explore", "feed"):  # their screenshots show a running session and feed
            page.screenshot(path=str(shots / f"{name}.png"))
        assert not page.errors, (name, page.errors)


def test_pages_need_a_login_when_the_server_does(page, start_server):
    token = "web-test-token-0123456789"
    locked = start_server(token=token)
    page.goto(f"{locked.url}/library")
    assert page.url == f"{locked.url}/login"
    page.fill("#password", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{locked.url}/")
    page.locator("input[name=q]").wait_for()
    page.goto(f"{locked.url}/jobs")
    page.wait_for_function("() => document.getElementById('status').textContent === 'No jobs yet.'")
    wait_for(lambda: page.url.endswith("/jobs"), 5, "staying on /jobs")


def test_an_invariant_run_toward_an_uploaded_image(page, server, tmp_path):
    import numpy as np
    from PIL import Image

    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(target)
    page.goto(f"{server.url}/invariant?steps=3")
    page.fill("#iterations", "2")
    page.fill("#eval_seeds", "1, 2")
    page.set_input_files("#target_image", str(target))
    page.click("#start")
    page.locator("#compare").wait_for(state="visible", timeout=45_000)
    shown = page.locator("#target img")
    assert shown.get_attribute("src").startswith("/api/v1/artifacts/")
    assert "uploaded image" in shown.get_attribute("alt")
    wait_loaded(page, 4, "#compare img")  # the target and two seeds after (and before)


@pytest.fixture
def preview_settings(tiny_model):
    """The tiny model with a preview (2 steps) apart from its full quality (3 steps)."""
    from noise2art.engine.settings import SamplingOverrides

    saved = tiny_model.defaults, tiny_model.preview
    tiny_model.defaults = tiny_model.defaults.merged(SamplingOverrides(steps=3))
    tiny_model.preview = SamplingOverrides(steps=2)
    yield
    tiny_model.defaults, tiny_model.preview = saved


STEPS_SHOWN = """() => {
  const dt = [...document.querySelectorAll('#details dt')].find(d => d.textContent === 'Steps');
  return dt ? Number(dt.nextElementSibling.textContent) : null;
}"""


def test_search_shows_previews_and_an_opened_image_at_full_quality(page, server, preview_settings):
    page.goto(f"{server.url}/?q=a+blue+cube")  # no ?steps=: the page asks for the preview quality
    wait_loaded(page, 24)
    card = page.locator("#results .card[data-id]").first
    preview_id = card.get_attribute("data-id")
    record = page.request.get(f"{server.url}/api/v1/images/{preview_id}").json()
    assert record["steps"] == 2
    card.locator('[data-action="open"]').click()
    # The panel shows the preview's record, then the same embedding and seed at full quality.
    page.wait_for_function(f"() => ({STEPS_SHOWN})() === 3", timeout=30_000)
    src = page.locator("#details .details-body img").get_attribute("src")
    full_id = src.rsplit("/", 1)[-1].removesuffix(".png")
    assert full_id != preview_id
    full = page.request.get(f"{server.url}/api/v1/images/{full_id}").json()
    assert (full["seed"], full["embedding_id"], full["steps"]) == (record["seed"], record["embedding_id"], 3)


def test_two_picked_images_are_the_keyframes_of_an_interpolation(page, server):
    search(page, server)
    cards = page.locator("#results .card[data-id]")
    a, b = cards.nth(0).get_attribute("data-id"), cards.nth(1).get_attribute("data-id")
    cards.nth(0).locator('[data-action="pick-a"]').click()
    cards.nth(1).locator('[data-action="pick-b"]').click()
    page.locator('#picks [data-action="interpolate"]').click()
    page.wait_for_url(re.compile(r"/interpolate\?images="))
    assert page.locator("#keyframes").is_hidden()
    wait_loaded(page, 2, "#keyframe-images img")
    page.fill("#frames", "3")
    page.click("#start")
    page.locator("#viewer").wait_for(state="visible", timeout=45_000)
    assert f"{QUERY} → {QUERY}" in page.locator("#frame").get_attribute("alt")
    # The path starts on image A: its embedding and seed.
    first = page.locator("#frame").get_attribute("src").rsplit("/", 1)[-1].removesuffix(".png")
    start, picked = (page.request.get(f"{server.url}/api/v1/images/{i}").json() for i in (first, a))
    assert start["method"] == "interpolate" and start["seed"] == picked["seed"]
    assert page.request.get(f"{server.url}/api/v1/images/{b}").status == 200


def test_a_seed_beyond_what_a_javascript_number_holds_shows_every_digit(page, server):
    seed = 2**63 - 25  # a double rounds it to 9223372036854775808
    r = page.request.post(f"{server.url}/api/v1/generate",
                          data={"prompt": "a green cone, exact seed", "steps": 2, "seeds": [seed]})
    assert r.status == 202, r.text()
    job_id = r.json()["job_id"]
    wait_for(lambda: page.request.get(f"{server.url}/api/v1/jobs/{job_id}").json()["status"] == "completed")
    image_id = page.request.get(f"{server.url}/api/v1/jobs/{job_id}").json()["result"]["image_ids"][0]
    page.goto(f"{server.url}/library?q=exact+seed")
    card = page.locator(f'#results .card[data-id="{image_id}"]')
    card.locator("figcaption", has_text=f"seed {seed}").wait_for()
    card.locator('[data-action="open"]').click()
    page.locator("#details pre.infotext").wait_for()
    assert str(seed) in page.locator("#details").inner_text()
    assert "9223372036854775808" not in page.locator("#details").inner_text()


def test_between_search_marks_the_results_that_cross_a_bridge(page, server, monkeypatch):
    from tests.methods.test_index import fake_path, jump_at

    stream = page.request.post(f"{server.url}/api/v1/streams", data={"query": "a green cube", "steps": 2}).json()
    url = f"{server.url}/api/v1/streams/{stream['id']}/pages/0?size=2"
    wait_for(lambda: page.request.get(url).status == 200, 60, "two stored images")
    a, b = [i["id"] for i in page.request.get(url).json()["images"]]
    fake_path(monkeypatch, jump_at(0.6, size=2.0))  # the path measures as one flip: it is bridged
    page.goto(f"{server.url}/?between={a},{b}&steps=2")
    wait_loaded(page, 24)
    assert page.locator("#stream-info").inner_text().startswith("Between:")
    bridged = page.locator("#results .card.bridged")
    page.wait_for_function("() => document.querySelectorAll('#results .card.bridged').length > 0")
    # Two thirds of the path's length is the bridge: most of the first page, not all of it.
    assert 8 <= bridged.count() < 24
    assert "morph" in bridged.first.get_attribute("title")
    assert page.locator("#results .card[data-id]:not(.bridged)").count() > 0
