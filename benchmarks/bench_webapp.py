"""First paint of the web app's pages with stored results, in Chromium, on a real server.

Starts `noise2art serve` on a fresh data folder with the embedded model, stores results
(a generate job of 24 seeds, and page 0 of a search for the same query), then opens each
page in headless Chromium (the system's package, by executable path) and reads, from the
browser's own Performance API:

- first contentful paint (`performance.getEntriesByName("first-contentful-paint")`);
- the time until 24 result images have loaded (the stored results on screen);

for a cold browser context (nothing cached) and a warm one (the same page opened again),
median over `--repeats`. Target: first paint <= 300 ms on a page with stored results.

    python benchmarks/bench_webapp.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import httpx

TARGET_FCP_MS = 300.0
BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
QUERY = "a red ball, oil painting"
LOADED = "n => [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length >= n"
TIMINGS = """() => {
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return { fcp: fcp ? fcp.startTime : null, now: performance.now() };
}"""


def _bench_service():
    """The server helpers of `bench_service.py` beside this file (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_service", Path(__file__).with_name("bench_service.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_service = _bench_service()
start_server, wait_jobs = _service.start_server, _service.wait_jobs


def store_results(client: httpx.Client) -> None:
    """A generate job of 24 seeds (the library) and page 0 of a search (the search page)."""
    job = client.post("/api/v1/generate", json={"prompt": QUERY, "seeds": list(range(24))}).json()["job_id"]
    wait_jobs(client, [job])
    stream = client.post("/api/v1/streams", json={"query": QUERY}).json()["id"]
    r = client.get(f"/api/v1/streams/{stream}/pages/0")
    if r.status_code == 202:
        wait_jobs(client, [r.json()["job_id"]])


def measure(browser, url: str, repeats: int) -> dict[str, list[float]]:
    """`{"cold fcp", "cold 24 images", "warm fcp", "warm 24 images"}` -> milliseconds per repeat."""
    out: dict[str, list[float]] = {k: [] for k in ("cold fcp", "cold 24 images", "warm fcp", "warm 24 images")}
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        page = context.new_page()
        for kind in ("cold", "warm"):
            page.goto(url, wait_until="commit")
            page.wait_for_function(LOADED, arg=24, timeout=60_000)
            t = page.evaluate(TIMINGS)
            out[f"{kind} fcp"].append(t["fcp"] if t["fcp"] is not None else float("nan"))
            out[f"{kind} 24 images"].append(t["now"])
        context.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: the embedded model)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    from playwright.sync_api import sync_playwright

    executable = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if executable is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="n2a-bench-webapp-"))
    proc, url = start_server(tmp / "data", args.model, 8, tmp / "server.log")
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            store_results(client)
        pages = {"search `/?q=...`": f"{url}/?{urlencode({'q': QUERY})}",
                 "library `/library`": f"{url}/library"}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True,
                                         args=["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
            results = {name: measure(browser, page_url, args.repeats) for name, page_url in pages.items()}
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"## bench_webapp — {datetime.date.today().isoformat()}\n")
    print(f"- machine: {platform.platform()}, {os.cpu_count()} cores; browser {executable} (headless)")
    print(f"- model: {args.model or 'the embedded model'}; stored: 24 generated images and search page 0 "
          f"of \"{QUERY}\"; median of {args.repeats} fresh browser contexts")
    print(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`\n")
    print("| page | first contentful paint, cold / warm (ms) | 24 images loaded, cold / warm (ms) | target |")
    print("|---|---|---|---|")
    for name, r in results.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"| {name} | {med['cold fcp']:.0f} / {med['warm fcp']:.0f} | {med['cold 24 images']:.0f} / "
              f"{med['warm 24 images']:.0f} | first paint <= {TARGET_FCP_MS:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
