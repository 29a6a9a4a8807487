"""Benchmark of the index build in-process against Ray on this machine (docs/scale.md).

The same build (queries x pages x page size, embedded model) runs twice into two fresh
data folders: in-process (`indexing.build.local_runner`), then with Ray Data on a local
Ray started here (`cluster.index.ray_runner`, one model actor per `threads` CPUs; by
default one actor with this process's torch threads, which is what gives the same files).
Reported, as a Markdown table or one JSON object:

- seconds of each build, median over `--repeat` alternating runs (the planner's model is
  loaded and warmed first, for both; each Ray build includes starting its actors and
  loading the model in them, which a real run pays too) and images per second;
- the overhead ratio `ray / in-process - 1` (target <= 15%), split into Ray's fixed cost
  per build (a one-page build on both paths, compared) and its steady overhead per image
  (the rest), and from those the build size past which the total overhead is under 15%;
  Ray's start-up (`ray.init`) on its own, which a run pays once however large;
- whether every file is the same (sha256) on both paths (target: all).

Run:
    python benchmarks/bench_scale.py                 # 8 queries x 2 pages x 24 results, 20 steps, 3 runs each
    python benchmarks/bench_scale.py --quick         # 2 queries x 1 page x 8 results, 4 steps: a minute or two
    python benchmarks/bench_scale.py --threads 1     # one Ray actor per core (the fastest on a CPU machine)
    python benchmarks/bench_scale.py --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUERIES = [
    "a red ball", "mountain with a lake at sunset", "a blue cube on a gradient background",
    "a forest at night with stars", "a yellow pyramid, oil painting", "snowy mountains, watercolor",
    "a desert with a river, pixel art", "a green ball, pencil sketch",
]
TARGETS = {"overhead": "<= 15%", "identical": "all files"}


def run(args) -> dict:
    import torch

    import noise2art
    from noise2art.cluster.index import RayIndexConfig, ray_runner
    from noise2art.cluster.runtime import ModelSpec, connected
    from noise2art.indexing.build import IndexBuildConfig, QuerySpec, build_index
    from noise2art.store import Store

    if args.threads:
        torch.set_num_threads(args.threads)
    queries = [QuerySpec(q) for q in (QUERIES * 10)[:args.queries]]
    config = IndexBuildConfig(pages=args.pages, page_size=args.page_size, sampling={"steps": args.steps})
    model = noise2art.load_model(device="cpu")
    root = Path(tempfile.mkdtemp(prefix="n2a-bench-scale-"))
    # Warm up every step of a page here (encode, sample, decode, features, PNG): a process's
    # first call of each is slower, and the Ray actors pay theirs inside the timed build.
    build_index(model, Store(root / "warm-up"), [QuerySpec("warm up")],
                IndexBuildConfig(pages=1, page_size=1, sampling={"steps": 2}))
    local_times, ray_times, fixed_times = [], [], []
    # One page of the same size: the same UNet batch shapes, so its first-call costs are the build's.
    tiny = IndexBuildConfig(pages=1, page_size=args.page_size, sampling={"steps": args.steps})

    def runner():
        return ray_runner(ModelSpec(device="cpu"), RayIndexConfig(actors=args.actors))
    init_times, nodes = [], 0
    try:
        # Alternate the two paths, each into a fresh store, so that a busy machine's slow
        # spells fall on both; medians are reported. The in-process builds run while no Ray
        # is up (its idle processes would take CPU from them); each Ray build starts its own
        # local Ray, as `--ray local` does.
        for k in range(args.repeat):
            probe = [QuerySpec(f"probe {k}")]
            t = time.perf_counter()
            local = build_index(model, Store(root / f"local-{k}"), queries, config)
            local_times.append(time.perf_counter() - t)
            # A one-page build: what Ray adds per build whatever its size (actors start, load
            # the model, take their first call of each batch shape) is its time less this.
            t = time.perf_counter()
            build_index(model, Store(root / f"probe-local-{k}"), probe, tiny)
            probe_local = time.perf_counter() - t
            t = time.perf_counter()
            with connected("local", num_cpus=os.cpu_count(), _temp_dir=str(root / "ray")) as ray:
                init_times.append(time.perf_counter() - t)
                nodes = len(ray.nodes())
                t = time.perf_counter()
                remote = build_index(model, Store(root / f"ray-{k}"), queries, config, runner=runner())
                ray_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                build_index(model, Store(root / f"probe-ray-{k}"), probe, tiny, runner=runner())
                fixed_times.append(time.perf_counter() - t - probe_local)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    init_s = statistics.median(init_times)
    local_s, ray_s = statistics.median(local_times), statistics.median(ray_times)
    fixed = statistics.median(fixed_times)
    steady = (ray_s - fixed) / local_s - 1  # Ray's cost per image once its actors run
    # The build size (images) past which the whole build's overhead is under 15%, derived
    # from the measured fixed cost and steady overhead (None when the steady overhead alone is over).
    per_image = local_s / len(local.images)
    break_even = fixed / (per_image * (0.15 - steady)) if steady < 0.15 and fixed > 0 else None
    n = len(local.images)
    same = sum(a == b for a, b in zip(local.images, remote.images))
    return {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}", "python": platform.python_version(),
        "torch": torch.__version__, "ray": __import__("ray").__version__, "nodes": nodes,
        "queries": len(queries), "pages": args.pages, "page_size": args.page_size, "steps": args.steps,
        "images": n, "in_process_s": round(local_s, 2), "ray_s": round(ray_s, 2), "ray_init_s": round(init_s, 2),
        "in_process_images_per_s": round(n / local_s, 3), "ray_images_per_s": round(n / ray_s, 3),
        "overhead": round(ray_s / local_s - 1, 4), "identical": f"{same}/{n}", "repeat": args.repeat,
        "in_process_runs_s": [round(x, 2) for x in local_times], "ray_runs_s": [round(x, 2) for x in ray_times],
        "ray_fixed_s": round(fixed, 2), "steady_overhead": round(steady, 4),
        "break_even_images": break_even if break_even is None else int(break_even),
        "quick": bool(args.quick),
    }


def table(r: dict) -> str:
    rows = [
        ("build, in-process (median)", f"{r['in_process_s']:.2f} s",
         f"{r['in_process_images_per_s']:.2f} images/s", ""),
        ("build, Ray local (median; incl. actor start + model load)", f"{r['ray_s']:.2f} s",
         f"{r['ray_images_per_s']:.2f} images/s", ""),
        ("overhead of Ray", f"{100 * r['overhead']:+.1f}%", "", TARGETS["overhead"]),
        ("Ray's fixed cost per build (one-page builds compared)", f"{r['ray_fixed_s']:.2f} s", "", ""),
        ("Ray's steady overhead (total less the fixed cost)", f"{100 * r['steady_overhead']:+.1f}%", "", ""),
        ("build size where the total overhead reaches 15% (derived)",
         "n/a" if r["break_even_images"] is None else f"{r['break_even_images']} images", "", ""),
        ("Ray start-up (ray.init, once per run)", f"{r['ray_init_s']:.2f} s", "", ""),
        ("identical files (sha256)", r["identical"], "", TARGETS["identical"]),
    ]
    head = (f"{r['date']}, {r['machine']}, torch {r['torch']}, Ray {r['ray']}: {r['queries']} queries x "
            f"{r['pages']} pages x {r['page_size']} results, {r['steps']} steps ({r['images']} images)"
            + (", --quick" if r["quick"] else ""))
    lines = [head, "", "| measure | value | rate | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 queries x 1 page x 8 results, 4 steps")
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--pages", type=int, default=2)
    p.add_argument("--page-size", type=int, default=24)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--actors", type=int, default=None, help="Ray model actors (default: CPUs / torch threads)")
    p.add_argument("--threads", type=int, default=None, help="torch threads here and in each actor")
    p.add_argument("--repeat", type=int, default=None, help="runs of each path, alternating (default 3; 1 quick)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.queries, args.pages, args.page_size, args.steps = 2, 1, 8, 4
    args.repeat = args.repeat or (1 if args.quick else 3)
    r = run(args)
    print(json.dumps(r) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
