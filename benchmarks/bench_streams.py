"""Pages of the infinite index through the API: a new page's first image and completion, and
the latency of a stored page, on a real server with the embedded model.

    python benchmarks/bench_streams.py [--pages 3] [--clients 16] [--model M] [--quality full|preview]

For each of `--pages` new queries: `POST /api/v1/streams`, then `GET .../pages/0` (202) and
the job's events until its first `job.image` and until `job.completed`. Then the p50 / p95
of fetching stored pages of 24 with 1 and `--clients` concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from pathlib import Path

import httpx



def _bench_service():
    """The server helpers of `bench_service.py` beside this file (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_service", Path(__file__).with_name("bench_service.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_service = _bench_service()
latencies, pct, start_server = _service.latencies, _service.pct, _service.start_server


def new_page(client: httpx.Client, query: str, quality: str | None = None) -> tuple[float, float, str]:
    """Seconds to the first image and to the whole page of 24 of a new query; its page path."""
    stream = client.post("/api/v1/streams", json={"query": query, **({"quality": quality} if quality else {})}).json()["id"]
    t0 = time.perf_counter()
    r = client.get(f"/api/v1/streams/{stream}/pages/0")
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    first = None
    with client.stream("GET", f"/api/v1/jobs/{job}/events", timeout=None) as events:
        for line in events.iter_lines():
            if line.startswith("event: job.image") and first is None:
                first = time.perf_counter() - t0
            if line.startswith("event: job.completed"):
                break
    done = time.perf_counter() - t0
    path = f"/api/v1/streams/{stream}/pages/0"
    assert client.get(path).status_code == 200
    return first, done, path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=3)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--model", default=None)
    p.add_argument("--quality", choices=("full", "preview"), default=None,
                   help="the streams' quality (default: the model's full settings; the web app scrolls in preview)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "data", args.model, 8, Path(tmp) / "server.log")
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                new_page(client, "a warm-up query", args.quality)
                pages = [new_page(client, q, args.quality) for q in ("a landscape at sunset", "a red ball, oil painting",
                                                       "mountains with a lake", "a blue cube on a gradient")
                         [:args.pages]]
                stored = [path for _, _, path in pages]
                time.sleep(3)  # let the prefetched next pages finish, so the latencies run on an idle worker
                lat = {n: latencies(url, stored, n, 40 if n == 1 else 10, 0) for n in (1, args.clients)}
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    out = {"model": args.model or "world-64", "quality": args.quality or "full",
           "first_image_s": [f for f, _, _ in pages], "page_s": [d for _, d, _ in pages]}
    for n, values in lat.items():
        out[f"stored_page_{n}_clients_ms"] = {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "n": len(values)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
