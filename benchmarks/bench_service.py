"""Latency and throughput of `noise2art serve` on a real server process.

Starts `noise2art serve` on a fresh temporary data folder and measures, over HTTP:

- time to the first image and to all images of one generate job of 24 seeds (SSE
  `/api/v1/jobs/{id}/events`, `job.image` events);
- p50 / p95 latency of fetching a stored PNG and of a library page of 24, with 1, 4 and 16
  concurrent clients (one keep-alive connection each; `--client threads` runs them as
  httpx clients in threads, `--floor` measures both kinds against a server that does nothing);
- images per second of 8 single-seed generate jobs submitted together (batched into shared
  UNet calls, `--max-batch 8`) against the same 8 jobs submitted one after another; the
  client learns that a job ended from the event stream, as the web app does.

Generation uses the model's default sampling settings (the embedded model: 20 steps).
Prints a markdown table.

    python benchmarks/bench_service.py            # the embedded model
    python benchmarks/bench_service.py --quick    # fewer requests per measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

TARGET_P95_MS = 50.0
TARGET_BATCH_RATIO = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, model: str | None, max_batch: int, log: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "noise2art.cli.main", "serve", "--data", str(data), "--port", str(port),
           "--device", "cpu", "--max-batch", str(max_batch), "--log-level", "warning"]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=url, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}); see {log}")
            try:
                if c.get("/api/v1/health").status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not come up")


def wait_jobs(client: httpx.Client, ids: list[str], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] == "completed":
                pending.discard(job_id)
            elif job["status"] in ("failed", "canceled", "interrupted"):
                raise SystemExit(f"job {job_id} ended {job['status']}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise SystemExit("jobs did not complete in time")
        if pending:
            time.sleep(0.02)


def generate_24(client: httpx.Client, url: str) -> tuple[float, float, list[str]]:
    """(seconds to first image, seconds to all 24, image ids) of one 24-seed job, from SSE."""
    t0 = time.perf_counter()
    r = client.post("/api/v1/generate", json={"prompt": "a red ball, oil painting", "seeds": list(range(24))})
    r.raise_for_status()
    job_id = r.json()["job_id"]
    first = last = None
    images: list[str] = []
    event = None
    with httpx.Client(base_url=url, timeout=None) as sse:
        with sse.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "job.image":
                    now = time.perf_counter() - t0
                    first = now if first is None else first
                    last = now
                    images.append(json.loads(line[6:])["image_id"])
                elif line.startswith("data: ") and event in ("job.completed", "job.failed", "job.canceled"):
                    break
    if len(images) != 24:
        raise SystemExit(f"the job gave {len(images)} images, not 24")
    return first, last, images


def latencies(url: str, paths: list[str], clients: int, per_client: int, seed: int, kind: str = "asyncio"
              ) -> list[float]:
    """Seconds per request of `clients` concurrent clients, each `per_client` GETs of random `paths`.

    `kind="asyncio"`: one thread holds every client's keep-alive connection and writes plain
    HTTP/1.1, so the load generator costs little of the two cores it shares with the server.
    `kind="threads"`: one thread with an httpx client each; on 2 cores the clients' own GIL
    contention then dominates the tail (`--floor` measures it against a server that does
    nothing).
    """
    if kind == "asyncio":
        return _latencies_asyncio(url, paths, clients, per_client, seed)
    return _latencies_threads(url, paths, clients, per_client, seed)


async def _get(reader, writer, host: str, path: str) -> int:
    """One keep-alive GET on an open connection: the status (the body is read and dropped)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def _latencies_asyncio(url: str, paths: list[str], clients: int, per_client: int, seed: int) -> list[float]:
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    out: list[float] = []
    errors: list[str] = []

    async def client(k: int, start: asyncio.Event) -> None:
        rng = random.Random(seed * 1000 + k)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        await _get(reader, writer, parts.netloc, paths[0])  # connect first: measure requests, not the handshake
        await start.wait()
        for _ in range(per_client):
            path = rng.choice(paths)
            t = time.perf_counter()
            status = await _get(reader, writer, parts.netloc, path)
            out.append(time.perf_counter() - t)
            if status != 200:
                errors.append(f"{path}: {status}")
        writer.close()

    async def run() -> None:
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(k, start)) for k in range(clients)]
        await asyncio.sleep(0.2)
        start.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")
    return out


async def noop_app(scope, receive, send) -> None:
    """A server that does nothing but answer 2 KB: the floor of the latency measurement."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"image/png"), (b"content-length", b"2048")]})
        await send({"type": "http.response.body", "body": b"x" * 2048})


def floor(clients: int, per_client: int, kind: str) -> list[float]:
    """Latencies of `clients` clients of `kind` against `noop_app` under uvicorn."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench_service:noop_app", "--app-dir", str(Path(__file__).parent),
           "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the no-op server did not come up") from None
                time.sleep(0.1)
        return latencies(url, ["/"], clients, per_client, 0, kind)
    finally:
        proc.terminate()
        proc.wait(10)


def _latencies_threads(url: str, paths: list[str], clients: int, per_client: int, seed: int) -> list[float]:
    out: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    errors: list[str] = []

    def run(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        mine = []
        with httpx.Client(base_url=url, timeout=30) as c:
            c.get(paths[0])  # connect first: measure requests, not the TCP handshake
            barrier.wait()
            for _ in range(per_client):
                path = rng.choice(paths)
                t = time.perf_counter()
                r = c.get(path)
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"{path}: {r.status_code}")
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000


class Completions:
    """Jobs' ends as the server announces them on `GET /api/v1/events`, read by a thread, so
    that waiting for a job costs the server nothing (polling eight jobs every 20 ms did: the
    requests took CPU from the renders they waited for)."""

    def __init__(self, url: str):
        self.ended: dict[str, str] = {}
        self._cond = threading.Condition()
        self._client = httpx.Client(base_url=url, timeout=None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event = None
        try:
            with self._client.stream("GET", "/api/v1/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event in ("job.completed", "job.failed", "job.canceled"):
                        with self._cond:
                            self.ended[json.loads(line[6:])["job_id"]] = event
                            self._cond.notify_all()
        except httpx.HTTPError:
            pass  # closed

    def wait(self, ids: list[str], timeout: float = 1800) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: all(i in self.ended for i in ids), timeout):
                raise SystemExit("jobs did not complete in time")
        failed = [i for i in ids if self.ended[i] != "job.completed"]
        if failed:
            raise SystemExit(f"jobs ended without completing: {failed}")

    def close(self) -> None:
        self._client.close()


def throughput(client: httpx.Client, done: Completions, seeds: list[int], together: bool, prompt: str) -> float:
    """Images per second of one single-seed job per seed: all submitted at once, or one by one."""
    def submit(seed: int) -> str:
        return client.post("/api/v1/generate", json={"prompt": prompt, "seeds": [seed]}).json()["job_id"]

    t0 = time.perf_counter()
    if together:
        done.wait([submit(s) for s in seeds])
    else:
        for s in seeds:
            done.wait([submit(s)])
    return len(seeds) / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model for `noise2art serve --model` (default: the embedded model)")
    p.add_argument("--quick", action="store_true", help="fewer requests per latency measurement")
    p.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client", choices=("asyncio", "threads"), default="asyncio",
                   help="load generator: asyncio (one thread, plain keep-alive HTTP; default) or threads (an "
                        "httpx client per thread)")
    p.add_argument("--floor", action="store_true", help="also measure each client kind against a server that "
                                                         "does nothing (16 clients)")
    args = p.parse_args()

    per_request = 40 if args.quick else 200  # requests per latency measurement (split over the clients)
    work = Path(tempfile.mkdtemp(prefix="n2a-bench-service-"))
    log = work / "server.log"
    rows = []
    t_bench = time.perf_counter()
    proc, url = start_server(work / "data", args.model, args.max_batch, log)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            # Warm the model (first call pays one-off costs) on a seed the measurements do not use.
            wait_jobs(client, [client.post("/api/v1/generate", json={"prompt": "warm up", "seeds": [999]})
                       .json()["job_id"]])
            first, last, image_ids = generate_24(client, url)
            rows.append(("generate 24 seeds: first image", f"{first:.2f} s", ""))
            rows.append(("generate 24 seeds: all 24", f"{last:.2f} s", f"{24 / last:.2f} img/s"))

            pngs = [f"/api/v1/images/{i}.png" for i in image_ids]
            pages = ["/api/v1/library?limit=24"]
            page = client.get("/api/v1/library", params={"limit": 24}).json()
            assert len(page["images"]) == 24
            measured = {}
            for name, paths in (("image PNG", pngs), ("library page of 24", pages)):
                for clients in (1, 4, 16):
                    lat = latencies(url, paths, clients, max(5, per_request // clients), args.seed, args.client)
                    measured[(name, clients)] = (pct(lat, 0.5), pct(lat, 0.95))
                    rows.append((f"{name}, {clients} client{'s' if clients > 1 else ''}",
                                 f"p50 {pct(lat, 0.5):.1f} ms", f"p95 {pct(lat, 0.95):.1f} ms ({len(lat)} req)"))

            seeds_b = list(range(100, 100 + args.max_batch))
            seeds_s = list(range(200, 200 + args.max_batch))
            done = Completions(url)
            try:
                batched = throughput(client, done, seeds_b, True, "a blue cube")
                single = throughput(client, done, seeds_s, False, "a blue cube")
            finally:
                done.close()
            rows.append((f"{args.max_batch} single-seed jobs submitted together (batched)", f"{batched:.2f} img/s", ""))
            rows.append((f"{args.max_batch} single-seed jobs one after another", f"{single:.2f} img/s", ""))
            rows.append(("batching speed-up", f"{batched / single:.2f}x", ""))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.floor:
        for kind in ("asyncio", "threads"):
            lat = floor(16, max(5, per_request // 16), kind)
            rows.append((f"no-op server, 16 {kind} clients (the measurement's floor)", f"p50 {pct(lat, 0.5):.1f} ms",
                         f"p95 {pct(lat, 0.95):.1f} ms ({len(lat)} req)"))
    total = time.perf_counter() - t_bench
    p95_ok = all(measured[(n, 16)][1] <= TARGET_P95_MS for n in ("image PNG", "library page of 24"))
    batch_ok = batched / single >= TARGET_BATCH_RATIO

    print(f"model: {args.model or 'embedded'}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
          f"server --max-batch {args.max_batch} --device cpu; {args.client} clients; "
          f"{'quick' if args.quick else 'full'} run, "
          f"{total:.0f} s")
    print()
    print("| measurement | value | detail |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print()
    print(f"p95 <= {TARGET_P95_MS:.0f} ms for image and library at 16 clients: {'met' if p95_ok else 'NOT met'}")
    print(f"batching >= {TARGET_BATCH_RATIO:.0f}x: {'met' if batch_ok else 'NOT met'} ({batched / single:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
