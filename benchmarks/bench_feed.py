"""Speed of the generated feed: seconds for the next 6 items, rendered, call after call.

    python benchmarks/bench_feed.py [--model world-64] [--calls 10] [--batch 6]

For each quality (preview, the web app's feed; full, the model's defaults) a fresh feed
over two topics takes `--calls` calls of `Feed.next(batch)` + `Feed.render`, reacting to
every item in between (a like for 30% of them, drawn from a fixed generator), as a person
scrolling the feed does. The first calls also render the candidates ahead
(`FeedConfig.lookahead`); later calls render one batch per batch shown. Prints a Markdown
table with date, machine and command; the quality figures of the feed are
`noise2art feed simulate`'s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch

TOPICS = ("a landscape", "a still life")


def timings(model, quality: str, calls: int, batch: int) -> list[float]:
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.feed import Feed, FeedConfig

    feed = Feed.start(model, list(TOPICS), FeedConfig(sampling=SamplingOverrides(quality=quality)))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        items = feed.next(batch)
        feed.render(items)
        out.append(time.perf_counter() - t0)
        for item in items:
            feed.react(item.id, "like" if rng.random() < 0.3 else "skip")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="world-64")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--batch", type=int, default=6)
    args = parser.parse_args()

    import noise2art

    model = noise2art.load_model(args.model, device="cpu")
    rows = []
    for quality in ("preview", "full"):
        run = model.resolve(quality=quality)
        times = timings(model, quality, args.calls, args.batch)
        label = f"{quality}: {run.unet or model.model_id}, {run.scheduler_label} {run.steps}, guidance {run.guidance:g}"
        rows.append((label, times))

    print(f"## bench_feed — {datetime.date.today()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/bench_feed.py {' '.join(sys.argv[1:])}")
    print(f"model: {model.model_id}; topics {', '.join(TOPICS)}; next {args.batch} items + render, "
          f"{args.calls} calls\n")
    print(f"| sampling | first four calls (s) | later calls, median (s) | slowest (s) | target |")
    print("|---|---|---|---|---|")
    for label, times in rows:
        first = ", ".join(f"{t:.2f}" for t in times[:4])
        later = float(np.median(times[4:])) if len(times) > 4 else float("nan")
        print(f"| {label} | {first} | {later:.2f} | {max(times):.2f} | <= 1.5 |")


if __name__ == "__main__":
    main()
