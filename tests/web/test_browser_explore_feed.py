"""The Explore (feedback sessions) and Feed (generated feed) pages in Chromium, against a live
server on the tiny model (`?steps=2`). `NOISE2ART_SCREENSHOTS=1` writes docs/screenshots/
explore.png and feed.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LOADED = "sel => [...document.querySelectorAll(sel)].filter(i => i.complete && i.naturalWidth > 0).length"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shots_dir(tmp_path: Path) -> Path:
    shots = SHOTS if os.environ.get("NOISE2ART_SCREENSHOTS") else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def loaded(page, selector: str) -> int:
    return page.evaluate(LOADED, selector)


def wait_loaded(page, n: int, selector: str, timeout=20_000) -> None:
    page.wait_for_function(f"n => ({LOADED})({selector!r}) >= n", arg=n, timeout=timeout)


def wait_round(page, round_: int) -> None:
    page.locator(f'#candidates[data-state="ready"][data-round="{round_}"]').wait_for(state="attached")
    wait_loaded(page, 3, "#candidates img")
    wait_loaded(page, 1, "#current")


def all_alt(page) -> bool:
    return page.evaluate("() => [...document.images].every(i => i.getAttribute('alt'))")


def test_an_explore_round_choose_and_undo(page, server, tmp_path):
    page.set_viewport_size({"width": 960, "height": 640})
    page.goto(f"{server.url}/explore?steps=2")
    page.fill("#prompt", "a red ball")
    page.fill("#n_variants", "3")
    page.click("#start")
    page.wait_for_url(re.compile(r"/explore\?session=\w+"))
    session_id = re.search(r"session=(\w+)", page.url).group(1)
    first_round = page.request.get(f"{server.url}/api/v1/sessions/{session_id}").json()["round"]
    wait_round(page, first_round)
    assert page.locator("#candidates button.candidate").count() == 3
    assert page.locator("#current").get_attribute("alt") == "a red ball"
    assert page.locator("#candidates img").first.get_attribute("alt") == "candidate 1"
    assert page.locator("#history").get_attribute("data-count") == "0"
    # The session is listed (a link that resumes it).
    page.locator(f'#sessions li[data-id="{session_id}"] a').wait_for()

    page.locator("#candidates button.candidate").nth(1).click()
    page.locator('#history[data-count="1"]').wait_for(state="attached")
    wait_round(page, first_round + 1)
    assert page.locator("#history li").first.get_attribute("data-index") == "1"
    wait_loaded(page, 1, "#map")  # the session's map, redrawn with the choice
    assert "choices=1" in page.locator("#map").get_attribute("src")
    assert all_alt(page)
    page.evaluate("() => document.getElementById('session').scrollIntoView()")
    page.wait_for_timeout(100)
    page.screenshot(path=str(shots_dir(tmp_path) / "explore.png"))

    page.locator("#undo").wait_for()
    page.keyboard.press("u")
    page.locator('#history[data-count="0"]').wait_for(state="attached")
    wait_round(page, first_round)
    view = page.request.get(f"{server.url}/api/v1/sessions/{session_id}").json()
    assert view["round"] == first_round and view["history"] == []
    # ?session= in the URL: a reload resumes the session.
    page.reload()
    wait_round(page, first_round)
    assert page.locator("#session-title").text_content() == "a red ball"

    # The current embedding on four new seeds: stored, then rendered by a generate job.
    page.click("#other-seeds")
    page.locator('#other-images[data-state="ready"]').wait_for(state="attached", timeout=30_000)
    wait_loaded(page, 4, "#other-images img")
    alts = [page.locator("#other-images img").nth(k).get_attribute("alt") for k in range(4)]
    assert all(a.startswith("a red ball (seed ") for a in alts) and len(set(alts)) == 4
    assert page.locator("#download").is_visible()  # the embedding it rendered can be downloaded


def test_the_feed_loads_items_takes_a_like_and_scrolls_for_more(page, server, tmp_path):
    page.set_viewport_size({"width": 960, "height": 640})
    page.goto(f"{server.url}/feed?steps=2")
    page.fill("#topics", "a red ball\na blue cube")
    page.click("#start")
    page.wait_for_url(re.compile(r"/feed\?feed=\w+"))
    feed_id = re.search(r"feed=(\w+)", page.url).group(1)
    wait_loaded(page, 6, "#feed .feed-item img")
    labels = page.eval_on_selector_all("#feed .feed-item .why-label", "ls => ls.map(l => l.textContent.trim())")
    assert len(labels) >= 6 and all(labels)
    assert all_alt(page)

    first = page.locator("#feed .feed-item").first
    with page.expect_response(lambda r: r.url.endswith(f"/feeds/{feed_id}/events")
                              and r.request.method == "POST" and '"like"' in (r.request.post_data or "")) as info:
        first.locator('[data-action="like"]').click()
    assert info.value.status == 200
    first.locator('[data-action="like"][aria-pressed="true"]').wait_for()
    assert page.request.get(f"{server.url}/api/v1/feeds/{feed_id}").json()["likes"] == 1
    page.evaluate("() => document.getElementById('feed-info').scrollIntoView()")
    page.wait_for_timeout(100)
    page.screenshot(path=str(shots_dir(tmp_path) / "feed.png"))

    for _ in range(40):
        if loaded(page, "#feed .feed-item img") >= 12:
            break
        page.mouse.wheel(0, 3000)
        page.wait_for_timeout(250)
    wait_loaded(page, 12, "#feed .feed-item img")
    # j moves the current item; the focused item takes the keys.
    page.locator("#feed .feed-item").nth(2).focus()
    page.keyboard.press("j")
    assert page.evaluate("() => document.activeElement.classList.contains('current')")
