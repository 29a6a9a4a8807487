"""Search over what is stored: time per query of `service.search.FeatureIndex` over N stored images.

    python benchmarks/bench_search.py [--images 100000] [--dim 256] [--queries 200]

Builds a temporary store with N image rows and random unit feature vectors (rows only: the
index reads vectors, never the image files), then measures the first load of the index
and the p50 / p95 of queries (one owner among two, top 24).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from noise2art.service.search import FeatureIndex
from noise2art.store import Store, new_id


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128, help="feature width (world CLIP: 128)")
    p.add_argument("--queries", type=int, default=200)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data")
        vecs = rng.normal(size=(args.images, args.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with store.transaction() as db:
            for k in range(args.images):
                image_id = new_id()
                db.execute("INSERT INTO images (id, sha256, model_id, prompt, negative, seed, steps, guidance, "
                           "scheduler, width, height, precision, method, owner, created) VALUES "
                           "(?, ?, 'm', 'p', '', ?, 20, 7.5, 'ddim', 64, 64, 'model', 'bench', ?, ?)",
                           (image_id, "0" * 64, k, "a" if k % 2 else "b", float(k)))
                db.execute("INSERT INTO image_features (image_id, kind, vector) VALUES (?, 'world-clip', ?)",
                           (image_id, vecs[k].tobytes()))
        index = FeatureIndex(store)
        t = time.perf_counter()
        index.search("world-clip", vecs[0], "a")
        load = time.perf_counter() - t
        times = []
        for _ in range(args.queries):
            q = rng.normal(size=args.dim).astype(np.float32)
            t = time.perf_counter()
            hits = index.search("world-clip", q, "a", limit=24)
            times.append(time.perf_counter() - t)
            assert len(hits) == 24
        store.close()
    times.sort()
    out = {"images": args.images, "dim": args.dim, "first_load_s": load,
           "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * len(times)) - 1]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
